"""`runner logs`: the log rendered as a terminal leaves it (each bar once, final) or raw; -n N; -f in pieces.

Read through the real code path on the local host (runner.logs._log_location is pointed at a file), with the
recorded ultralytics and YOLOv7 trainings in tests/fixtures/samples.
"""

from __future__ import annotations

import io
import random
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from runner.hosts.local import LocalHost
from runner.hostside import progress
from runner.observe import logs
from runner.observe.logs import LineRenderer, _last_lines, render_log, wants_color

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "samples"
ULTRALYTICS = SAMPLES / "ultralytics" / "train_tty.log"
YOLOV7 = SAMPLES / "yolov7" / "train_tty.log"
ULTRALYTICS_BARS = [
    "        1/3         0G     0.1103      0.385    0.06596          9         64: 100% ━━━━━━━━━━━━ 4/4 14.2it/s 0.3s",  # noqa: E501 (a bar as the tool prints it)
    "        2/3         0G     0.6219     0.6825      0.386          8         64: 100% ━━━━━━━━━━━━ 4/4 19.8it/s 0.2s",  # noqa: E501 (a bar as the tool prints it)
    "        3/3         0G     0.1301     0.3945    0.07743          9         64: 100% ━━━━━━━━━━━━ 4/4 17.0it/s 0.2s",  # noqa: E501 (a bar as the tool prints it)
]
YOLOV7_BARS = [
    "       0/2        0G   0.06046  0.003944   0.02107   0.08547         8        64: 100%|██| 4/4 [00:00<00:00,  5.90it/s]",  # noqa: E501 (a bar as the tool prints it)
    "       1/2        0G   0.04588  0.003491    0.0173   0.06667        14        64: 100%|██| 4/4 [00:00<00:00,  4.72it/s]",  # noqa: E501 (a bar as the tool prints it)
    "       2/2        0G   0.04444  0.003692   0.01787     0.066        11        64: 100%|██| 4/4 [00:03<00:00,  1.24it/s]",  # noqa: E501 (a bar as the tool prints it)
]
ULTRALYTICS_EPOCH = re.compile(r"\d/3 {9}0G")  # an epoch bar's state, final or not
YOLOV7_EPOCH = re.compile(r"\d/2 {8}0G")


class CountingHost(LocalHost):
    """The local host, counting the bytes each command and copy brings back."""

    def __init__(self) -> None:
        super().__init__()
        self.fetched: list[int] = []

    def run(self, argv: Any, stdin: Any = None, timeout: float | None = 60) -> Any:
        result = super().run(argv, stdin, timeout)
        self.fetched.append(len(result.stdout))
        return result

    def read_into(self, path: str, offset: int, out: Any) -> None:
        super().read_into(path, offset, out)
        self.fetched.append(Path(path).stat().st_size - offset)


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> CountingHost:
    counting = CountingHost()
    monkeypatch.setattr(logs, "_log_location", lambda job: (counting, job.path))
    return counting


def show(path: Path, last_lines: int | None = None, **view: bool) -> bytes:
    out = io.BytesIO()
    logs.show_log(SimpleNamespace(path=str(path)), last_lines, out.write, **view)  # type: ignore[arg-type]
    return out.getvalue()


def text_of(data: bytes) -> str:
    return data.decode("utf-8")


# tail -n counting, shared by --raw -n and -f -n


LOG = b"Script started\r\nepoch 1\r\n\r  1/3 10%\r  1/3 50%\r  1/3 100%\r\nval 0.5\r\n"


def test_lines_end_at_newline_only() -> None:
    # The \r progress updates of one bar stay one line, as on the terminal.
    assert _last_lines(LOG, 2) == b"\r  1/3 10%\r  1/3 50%\r  1/3 100%\r\nval 0.5\r\n"
    assert _last_lines(LOG, 1) == b"val 0.5\r\n"


def test_a_final_partial_line_is_kept_and_counted() -> None:
    data = b"one\ntwo\nthree\n\r  2/3 40%\r  2/3 60%"
    assert _last_lines(data, 1) == b"\r  2/3 40%\r  2/3 60%"
    assert _last_lines(data, 2) == b"three\n\r  2/3 40%\r  2/3 60%"


def test_more_lines_than_the_log_holds_gives_it_all() -> None:
    assert _last_lines(LOG, 100) == LOG
    assert _last_lines(b"no newline", 5) == b"no newline"


def test_empty_lines_count() -> None:
    assert _last_lines(b"a\n\n\nb\n", 3) == b"\n\nb\n"


def test_count_zero_or_less_gives_nothing() -> None:
    assert _last_lines(LOG, 0) == b""
    assert _last_lines(LOG, -3) == b""
    assert _last_lines(b"", 5) == b""


# The whole log, rendered


def test_rendered_ultralytics_log_shows_each_epoch_bar_once_in_its_final_state(host: CountingHost) -> None:
    raw = ULTRALYTICS.read_bytes()
    assert len(ULTRALYTICS_EPOCH.findall(raw.decode())) == 8  # the recording holds 8 states of the 3 bars
    shown = text_of(show(ULTRALYTICS))
    lines = shown.split("\n")
    assert [line for line in lines if ULTRALYTICS_EPOCH.search(line)] == ULTRALYTICS_BARS
    assert len(lines) == raw.count(b"\n") + 1 == 81 and shown.endswith("\n")  # one line per line, no more
    assert "\r" not in shown and "\x1b[K" not in shown
    assert "2.9it/s" not in shown  # an intermediate state of epoch 2's bar
    # The validation bars, too: one final line each (3 epochs and the final validation).
    assert sum("Class     Images  Instances" in line for line in lines) == 4
    assert (
        "\x1b[34m\x1b[1mtrain: \x1b[0mNew cache created: /home/user/exp/ds/labels/train.cache" in lines
    )  # colours kept
    # Recorder lines of util-linux `script` are what the log holds: they stay (run.sh's script never writes them).
    assert lines[0].startswith("Script started on 2026-11-22 02:25:18+00:00")


def test_rendered_yolov7_log_shows_each_epoch_bar_once_in_its_final_state(host: CountingHost) -> None:
    raw = YOLOV7.read_bytes()
    assert len(YOLOV7_EPOCH.findall(raw.decode())) == 27
    lines = text_of(show(YOLOV7)).split("\n")
    assert [line for line in lines if YOLOV7_EPOCH.search(line)] == YOLOV7_BARS
    assert len(lines) == raw.count(b"\n") + 1 == 135
    # tqdm's first state of a bar, with a warning printed on its line, stays as the terminal showed it.
    assert any(
        line.startswith("  0%|   ")
        and line.endswith(
            "/train.py:360: FutureWarning: `torch.cuda.amp."
            "autocast(args...)` is deprecated. Please use `torch.amp.autocast('cuda', args...)` instead."
        )
        for line in lines
    )


@pytest.mark.parametrize("sample", [ULTRALYTICS, YOLOV7])
def test_raw_is_the_recorded_bytes(host: CountingHost, sample: Path) -> None:
    data = sample.read_bytes()
    assert show(sample, raw=True) == data
    assert show(sample, raw=True, color=False) == data  # colours are no business of --raw
    for count in (0, 1, 5, 50, 10_000):
        assert show(sample, count, raw=True) == _last_lines(data, count)


def test_without_colour_every_escape_code_goes(host: CountingHost) -> None:
    plain = text_of(show(ULTRALYTICS, color=False))
    assert "\x1b" not in plain
    lines = plain.split("\n")
    assert "train: New cache created: /home/user/exp/ds/labels/train.cache" in lines
    assert "Logging results to /home/user/exp/runs/u8" in lines
    assert [line for line in lines if ULTRALYTICS_EPOCH.search(line)] == ULTRALYTICS_BARS
    assert plain == progress.ESCAPE.sub("", text_of(show(ULTRALYTICS)))


def test_bytes_that_are_not_utf8_pass_through(host: CountingHost, tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    log.write_bytes(b"caf\xe9 10%\rcaf\xe9 100%\r\nok \xff\n")
    assert show(log) == b"caf\xe9 100%\nok \xff\n"


def test_a_log_not_written_yet_shows_nothing(host: CountingHost, tmp_path: Path) -> None:
    assert show(tmp_path / "train.log") == b""
    assert show(tmp_path / "train.log", 20) == b""
    assert show(tmp_path / "train.log", raw=True) == b""


# -n N, rendered: the last N rendered lines, from a bounded window


@pytest.mark.parametrize("sample", [ULTRALYTICS, YOLOV7])
def test_rendered_last_lines_are_the_end_of_the_whole_rendering(
    host: CountingHost, sample: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = text_of(show(sample))
    for first_window in (64, 1000, logs.FIRST_WINDOW_BYTES):  # small ones must widen, several times
        monkeypatch.setattr(logs, "FIRST_WINDOW_BYTES", first_window)
        for count in (1, 2, 7, 30, 80, 134, 500):
            expected = "\n".join(whole.split("\n")[:-1][-count:]) + "\n"
            assert text_of(show(sample, count)) == expected, (first_window, count)
        assert show(sample, 0) == b""


def test_last_lines_of_a_big_log_read_only_a_window(host: CountingHost, tmp_path: Path) -> None:
    bar = "".join(f"\r  7/9 {step:3d}% ━━━━━━━━ {step}/100" for step in range(101)) + "\r\n"
    log = tmp_path / "train.log"
    with log.open("wb") as out:
        for epoch in range(3000):  # 3000 epochs of 100 updates: 9 MB
            out.write(f"epoch {epoch}\r\n{bar}".encode())
    shown = text_of(show(log, 4)).split("\n")
    assert shown == ["epoch 2998", "  7/9 100% ━━━━━━━━ 100/100", "epoch 2999", "  7/9 100% ━━━━━━━━ 100/100", ""]
    assert sum(host.fetched) <= logs.FIRST_WINDOW_BYTES
    host.fetched.clear()
    assert len(text_of(show(log, 200)).split("\n")) == 201  # 200 lines need a wider window, still not the log
    assert sum(host.fetched) < log.stat().st_size // 4


def test_a_line_longer_than_the_cap_is_cut_at_the_cap(
    host: CountingHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs, "FIRST_WINDOW_BYTES", 1000)
    monkeypatch.setattr(logs, "WINDOW_CAP_BYTES", 16_000)
    log = tmp_path / "train.log"
    # One bar that never ended its line: 200 KB of updates, cut inside a '━' at the cap.
    log.write_bytes(b"start\n" + "".join(f"\r{step:05d} ━━" for step in range(20_000)).encode())
    assert show(log, 3) == "19999 ━━".encode()
    assert max(host.fetched) <= 16_000


# -f: pieces cut anywhere render as the whole does


def awkward_cuts(data: bytes) -> list[int]:
    """Cut points inside \\r\\n, inside the bars' '━' and '█' (3 bytes each) and inside escape codes."""
    cuts = []
    markers = (
        (b"\r\n", (1,)),
        ("━".encode(), (1, 2)),
        ("█".encode(), (1, 2)),
        (b"\x1b[34m", (1, 2, 3)),
        (b"\x1b[K", (1, 2)),
    )
    for marker, inside in markers:
        for found in [m.start() for m in re.finditer(re.escape(marker), data)]:
            cuts += [found + offset for offset in inside]
    return sorted(set(cuts))


def feed_in_pieces(data: bytes, cuts: list[int], color: bool = True) -> tuple[bytes, list[bytes]]:
    written: list[bytes] = []
    renderer = LineRenderer(written.append, color)
    for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
        renderer.feed(data[start:end])
    before_finish = b"".join(written)
    renderer.finish()
    return before_finish, written


@pytest.mark.parametrize("sample", [ULTRALYTICS, YOLOV7])
@pytest.mark.parametrize("color", [True, False])
def test_pieces_cut_at_awkward_places_render_as_the_whole(sample: Path, color: bool) -> None:
    data = sample.read_bytes()
    whole = render_log(data, color)
    cuts = awkward_cuts(data)
    assert len(cuts) > 100
    generator = random.Random(5)
    plans = [cuts, list(range(1, len(data))), sorted(generator.sample(range(1, len(data)), 300))]
    for plan in plans:
        before_finish, written = feed_in_pieces(data, plan, color)
        assert b"".join(written) == whole
        assert before_finish == render_log(data[: data.rindex(b"\n") + 1], color)
        assert all(piece.endswith(b"\n") for piece in written[:-1])  # only complete lines while it runs


def test_pieces_of_a_log_cut_mid_line_hold_that_line_back() -> None:
    data = ULTRALYTICS.read_bytes()
    cut = data.index("━".encode(), data.index(b"        2/3")) + 1  # inside epoch 2's bar, inside a '━'
    written: list[bytes] = []
    renderer = LineRenderer(written.append)
    renderer.feed(data[:cut])
    shown = b"".join(written)
    assert shown == render_log(data[: data.rindex(b"\n", 0, cut) + 1])  # the lines before the bar, nothing of it
    assert b"2/3" not in shown
    renderer.feed(data[cut:])
    renderer.finish()
    assert b"".join(written) == render_log(data)


def test_an_open_bar_is_held_until_its_line_ends() -> None:
    written: list[bytes] = []
    renderer = LineRenderer(written.append)
    renderer.feed(b"Epoch 1/3\r\n 10%|#  | 1/10\r")
    renderer.feed(b" 50%|#####     | 5/10\r 100%|##########| 10/10\r")
    assert written == [b"Epoch 1/3\n"]
    renderer.feed(b"\nEpoch 2/3\r")
    assert written == [b"Epoch 1/3\n", b" 100%|##########| 10/10\n"]
    renderer.feed(b"\n 30%|###  | 3/10")
    renderer.finish()  # the job ended with a bar open: it shows as it stands
    assert b"".join(written) == b"Epoch 1/3\n 100%|##########| 10/10\nEpoch 2/3\n 30%|###  | 3/10"


def test_follow_renders_a_growing_log_once_per_line(
    host: CountingHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = ULTRALYTICS.read_bytes()
    log = tmp_path / "train.log"
    cuts = awkward_cuts(data)[::7]
    pieces = [data[start:end] for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    job = SimpleNamespace(path=str(log), finished=False)

    def refresh_one(store: object, job: SimpleNamespace) -> SimpleNamespace:
        with log.open("ab") as out:  # the training writes its next piece between two polls
            out.write(pieces.pop(0))
        return SimpleNamespace(path=str(log), finished=not pieces)

    monkeypatch.setattr(logs, "refresh_one", refresh_one)
    monkeypatch.setattr(logs, "FOLLOW_POLL_SECONDS", 0)
    written: list[bytes] = []
    logs.follow_log(None, job, None, written.append, print)  # type: ignore[arg-type]
    shown = b"".join(written)
    assert shown == render_log(data)
    assert [line for line in text_of(shown).split("\n") if ULTRALYTICS_EPOCH.search(line)] == ULTRALYTICS_BARS

    written.clear()  # --raw -f: the bytes as they came
    logs.follow_log(None, SimpleNamespace(path=str(log), finished=True), None, written.append, print, raw=True)  # type: ignore[arg-type]
    assert b"".join(written) == data


def test_follow_from_the_last_lines_holds_the_open_bar(host: CountingHost, tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    log.write_bytes(b"one\r\ntwo\r\nthree\r\n 10%|#  | 1/10\r 20%|## | 2/10")
    job = SimpleNamespace(path=str(log), finished=True)
    written: list[bytes] = []
    logs.follow_log(None, job, 2, written.append, print)  # type: ignore[arg-type]
    assert written == [b"two\nthree\n", b" 20%|## | 2/10"]  # two complete lines, then the bar when it ended
    written.clear()
    logs.follow_log(None, job, 2, written.append, print, raw=True)  # type: ignore[arg-type]
    assert b"".join(written) == b"three\r\n 10%|#  | 1/10\r 20%|## | 2/10"  # as tail -n 2


# --color


class Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_colour_only_on_a_terminal_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    assert wants_color("auto", Stream(tty=True)) is True
    assert wants_color("auto", Stream(tty=False)) is False
    assert wants_color("always", Stream(tty=False)) is True
    assert wants_color("never", Stream(tty=True)) is False
    monkeypatch.setenv("NO_COLOR", "1")
    assert wants_color("auto", Stream(tty=True)) is False
    assert wants_color("always", Stream(tty=True)) is True
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert wants_color("auto", Stream(tty=False)) is True
