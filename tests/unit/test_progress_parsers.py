"""progress.py against real recorded trainings: ultralytics 8.4 and YOLOv7, through a pty (tty) and a pipe.

The module has one name, runner.hostside.progress (test_hostside_modules checks the host's way of importing it).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from runner.hostside import progress
from tests.unit.hostcopy import copy_hostside, run_in_copy

# Byte-for-byte copies of shared/samples, so the suite runs from a plain clone.
SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "samples"
TAIL_BYTES = 64 * 1024
LEARN_MORE = "\N{ELECTRIC LIGHT BULB} Learn more at https://docs.ultralytics.com/modes/train"


def tail(name: str) -> str:
    """What the agent reads: the last 64 KiB, decoded leniently (the cut may split a character)."""
    return (SAMPLES / name).read_bytes()[-TAIL_BYTES:].decode("utf-8", "replace")


def whole(name: str) -> str:
    # Not Path.read_text: its universal newlines would turn every \r into a line break.
    return (SAMPLES / name).read_bytes().decode("utf-8", "replace")


def upto(name: str, marker: str) -> str:
    """The log as it stood right after `marker` was written: a run caught in the middle."""
    text = whole(name)
    return text[: text.index(marker) + len(marker)]


ULTRALYTICS_VAL = {"images": 8, "instances": 18, "precision": 0.0, "recall": 0.0, "mAP50": 0.0, "mAP50-95": 0.0}


@pytest.mark.parametrize(
    ("sample", "rate", "losses"),
    [
        ("ultralytics/train_tty.log", 17.0, {"box": 0.1301, "cls": 0.3945, "dfl": 0.07743}),
        ("ultralytics/train_pipe.log", 19.3, {"box": 0.1301, "cls": 0.3945, "dfl": 0.07743}),
        # Two labels with class 7 of nc=3: ultralytics skips those images and trains on.
        ("ultralytics/bad_label_pipe.log", 20.2, {"box": 0.2219, "cls": 0.4056, "dfl": 0.1306}),
    ],
)
def test_finished_ultralytics_runs(sample: str, rate: float, losses: dict[str, float]) -> None:
    state = progress.parse_log_tail(tail(sample))
    assert state["format"] == "ultralytics"
    # `3/3` is the third of three epochs: ultralytics counts from 1.
    assert (state["epoch"], state["epochs"], state["batch"], state["batches"]) == (3, 3, 4, 4)
    assert state["rate_its"] == rate
    assert state["epoch_eta_s"] == 0.0 and state["run_eta_s"] == 0.0
    assert state["losses"] == losses
    assert state["val"] == ULTRALYTICS_VAL
    assert state["phase"] == "val"  # the last thing it did was validate best.pt
    assert state["last_line"] == LEARN_MORE  # the tty log's `Script done on ...` is the recorder's line


@pytest.mark.parametrize(
    ("sample", "rate", "losses", "val", "last_line"),
    [
        (
            "yolov7/train_tty.log",
            1.24,
            {"box": 0.04444, "obj": 0.003692, "cls": 0.01787, "total": 0.066},
            (0.00165, 0.222, 0.000586, 0.000148),
            "Optimizer stripped from /home/user/exp/runs7/y7/weights/best.pt, 12.2MB",
        ),
        (
            "yolov7/train_pipe.log",
            7.77,
            {"box": 0.04444, "obj": 0.003692, "cls": 0.01787, "total": 0.066},
            (0.00165, 0.222, 0.000586, 0.000148),
            "Optimizer stripped from /home/user/exp/runs7/y7pipe/weights/best.pt, 12.2MB",
        ),
        (
            "yolov7/noota_tty.log",
            8.11,
            {"box": 0.08567, "obj": 0.007605, "cls": 0.02592, "total": 0.1192},
            (0.00204, 0.264, 0.000755, 0.000159),
            "Optimizer stripped from /home/user/exp/runs7/y7noota/weights/best.pt, 12.2MB",
        ),
    ],
)
def test_finished_yolov7_runs(
    sample: str, rate: float, losses: dict[str, float], val: tuple[float, ...], last_line: str
) -> None:
    state = progress.parse_log_tail(tail(sample))
    assert state["format"] == "yolov7"
    # YOLOv7 printed `2/2` for its last epoch of three: reported 1-based, like ultralytics.
    assert (state["epoch"], state["epochs"], state["batch"], state["batches"]) == (3, 3, 4, 4)
    assert state["rate_its"] == rate
    assert state["losses"] == losses
    assert (state["val"]["precision"], state["val"]["recall"], state["val"]["mAP50"], state["val"]["mAP50-95"]) == val
    assert (state["val"]["images"], state["val"]["instances"]) == (8, 18)
    assert state["last_line"] == last_line


def test_ultralytics_caught_mid_epoch() -> None:
    state = progress.parse_log_tail(upto("ultralytics/train_tty.log", "1/4 2.9it/s 0.1s<1.0s"))
    assert (state["format"], state["phase"], state["epoch"], state["epochs"]) == ("ultralytics", "train", 2, 3)
    assert (state["batch"], state["batches"], state["rate_its"]) == (1, 4, 2.9)
    assert state["losses"] == {"box": 1.072, "cls": 0.9482, "dfl": 0.6509}
    assert state["epoch_eta_s"] == 1.0  # the bar's own `<1.0s`
    # The rest of this epoch, then one more epoch of 4 batches at 2.9 it/s.
    assert state["run_eta_s"] == pytest.approx(1.0 + 4 / 2.9)
    assert state["val"] == ULTRALYTICS_VAL  # epoch 1's validation row is still the latest


def test_yolov7_caught_in_its_first_epoch_counts_it_as_epoch_1() -> None:
    state = progress.parse_log_tail(upto("yolov7/train_tty.log", "1/4 [00:00<00:00,  6.56it/s]"))
    assert (state["format"], state["epoch"], state["epochs"]) == ("yolov7", 1, 3)  # printed as `0/2`
    assert (state["batch"], state["batches"], state["rate_its"], state["epoch_eta_s"]) == (1, 4, 6.56, 0.0)
    assert state["run_eta_s"] == pytest.approx(2 * 4 / 6.56)
    assert state["val"] is None


def test_yolov7_seconds_per_iteration() -> None:
    state = progress.parse_log_tail(upto("yolov7/train_tty.log", "1/4 [00:02<00:06,  2.05s/it]"))
    assert (state["epoch"], state["epochs"], state["batch"]) == (3, 3, 1)
    assert state["rate_its"] == pytest.approx(1 / 2.05)
    assert state["epoch_eta_s"] == 6.0 and state["run_eta_s"] == 6.0  # the last epoch: only its own remainder


@pytest.mark.parametrize(
    ("sample", "marker", "expected"),
    [
        # A tail that begins inside the last epoch's bar: the column header scrolled out.
        (
            "ultralytics/train_tty.log",
            "        3/3         0G    0.08158",
            ("ultralytics", 3, 3, {"box": 0.1301, "cls": 0.3945, "dfl": 0.07743}),
        ),
        (
            "yolov7/train_tty.log",
            "       2/2        0G   0.06122",
            ("yolov7", 3, 3, {"box": 0.04444, "obj": 0.003692, "cls": 0.01787, "total": 0.066}),
        ),
    ],
)
def test_format_is_known_without_the_column_header(sample: str, marker: str, expected: tuple) -> None:
    text = whole(sample)
    state = progress.parse_log_tail(text[text.index(marker) :])
    assert (state["format"], state["epoch"], state["epochs"], state["losses"]) == expected


def test_before_the_first_epoch_only_the_plan_is_known() -> None:
    state = progress.parse_log_tail(upto("ultralytics/train_tty.log", "Starting training for 3 epochs..."))
    # The dataset scan bars (`16/16 2.3Kit/s`) are not training progress.
    assert (state["format"], state["epochs"], state["epoch"], state["batch"]) == ("ultralytics", 3, None, None)


def test_yolov7_that_died_on_a_bad_label() -> None:
    state = progress.parse_log_tail(tail("yolov7/bad_label_pipe.log"))
    assert (state["format"], state["epoch"], state["losses"]) == ("yolov7", None, None)
    assert state["last_line"] == (
        "AssertionError: Label class 7 exceeds nc=3 in /home/user/exp/y7data_bad.yaml. Possible class labels are 0-2"
    )


def test_nan_losses_of_a_segmentation_run_keep_their_names() -> None:
    state = progress.parse_log_tail(tail("telemetry/log_yolo_nan-loss_gtx1660ti.txt"))
    assert (state["format"], state["epoch"], state["epochs"], state["batch"], state["batches"]) == (
        "ultralytics",
        1,
        100,
        1,
        1,
    )
    assert list(state["losses"]) == ["box", "seg", "cls", "dfl"]  # read from this run's header
    assert all(math.isnan(value) for value in state["losses"].values())
    assert state["rate_its"] == pytest.approx(1 / 2.42)
    assert state["run_eta_s"] == pytest.approx(99 * 2.42)


def test_a_generic_tqdm_bar() -> None:
    line = "Epoch 3/10: 45%|████▌     | 450/1000 [01:10<01:25,  6.43it/s, loss=0.231]"
    state = progress.parse_log_tail("starting\n\r" + line.replace("450/", "449/") + "\r" + line)
    assert (state["format"], state["epoch"], state["epochs"], state["batch"], state["batches"]) == (
        "tqdm",
        3,
        10,
        450,
        1000,
    )
    assert (state["rate_its"], state["epoch_eta_s"]) == (6.43, 85.0)
    assert state["run_eta_s"] == pytest.approx(85 + 7 * 1000 / 6.43)


def test_an_ultralytics_bar_with_thousands_of_items_per_second() -> None:
    scan_line = next(line for line in whole("ultralytics/train_tty.log").split("\n") if "2.3Kit/s" in line)
    state = progress.parse_log_tail(scan_line)
    assert (state["format"], state["batch"], state["batches"], state["rate_its"]) == ("tqdm", 16, 16, 2300.0)


def test_unknown_text_gives_only_the_last_line() -> None:
    state = progress.parse_log_tail("compiling\rcompiled 3 files\r\n\x1b[32mready\x1b[0m\r\n\r\n")
    assert state == dict.fromkeys(progress.FIELDS) | {"format": "unknown", "last_line": "ready"}
    assert progress.parse_log_tail("")["last_line"] is None


def test_no_exception_on_random_bytes_or_cut_logs() -> None:
    generator = random.Random(20261122)
    alphabet = b"\r\n\x1b[K0123456789/%|:.<>,?[] itsGBKMe-nafall\xe2\x94\x81\xf0\x9f"
    texts = [bytes(generator.randrange(256) for _ in range(generator.randrange(2000))) for _ in range(150)]
    texts += [bytes(generator.choice(alphabet) for _ in range(generator.randrange(3000))) for _ in range(150)]
    for sample in ("ultralytics/train_tty.log", "yolov7/train_tty.log", "yolov7/train_pipe.log"):
        data = (SAMPLES / sample).read_bytes()
        texts += [data[start:] for start in range(0, len(data), 97)] + [data[:end] for end in range(0, len(data), 89)]
    for data in texts:
        state = progress.parse_log_tail(data.decode("utf-8", "replace"))
        assert tuple(state) == progress.FIELDS
        progress.render_carriage_returns(data.decode("utf-8", "replace"))


def test_render_keeps_each_bar_s_final_state_and_the_colours() -> None:
    raw = whole("ultralytics/train_tty.log")
    shown = progress.render_carriage_returns(raw)
    lines = shown.split("\n")
    assert len(lines) == raw.count("\n") + 1  # one line per newline: nothing merged, nothing split
    bar = "        2/3         0G     0.6219     0.6825      0.386          8         64: 100% ━━━━━━━━━━━━ 4/4 19.8it/s 0.2s"  # noqa: E501
    assert bar in lines
    assert "2.9it/s" not in shown  # an intermediate state of that bar
    assert "\r" not in shown and "\x1b[K" not in shown
    assert "\x1b[34m\x1b[1mtrain: \x1b[0mNew cache created: /home/user/exp/ds/labels/train.cache" in lines


def test_render_of_a_yolov7_tty_log() -> None:
    shown = progress.render_carriage_returns(whole("yolov7/train_tty.log"))
    assert (
        "       2/2        0G   0.04444  0.003692   0.01787     0.066        11        64: 100%|██| 4/4 "
        "[00:03<00:00,  1.24it/s]" in shown.split("\n")
    )


def test_render_overwrites_like_a_terminal() -> None:
    assert progress.render_carriage_returns("abcdef\rxy") == "xycdef"  # no erase: the old tail stays visible
    assert progress.render_carriage_returns("abcdef\r\x1b[Kxy") == "xy"
    assert progress.render_carriage_returns("a\r\nb\r\n") == "a\nb\n"
    assert progress.render_carriage_returns("50%\r100%\r") == "100%"


def test_results_csv() -> None:
    summary = progress.parse_results_csv(whole("ultralytics/results.csv"))
    assert [row["epoch"] for row in summary["rows"]] == [1, 2, 3]
    assert summary["latest"] == {
        "epoch": 3,
        "losses": {"box": 0.13011, "cls": 0.39449, "dfl": 0.07743},
        "precision": 0.0,
        "recall": 0.0,
        "mAP50": 0.0,
        "mAP50-95": 0.0,
    }
    assert summary["rows"][1]["losses"]["box"] == 0.62188
    assert summary["best"]["epoch"] == 3  # all scores are 0: a tie goes to the later epoch, as best.pt does


@pytest.mark.parametrize(
    ("sample", "box"), [("ultralytics/results_pipe.csv", 0.13011), ("ultralytics/bad_label_results.csv", 0.22185)]
)
def test_other_results_csv(sample: str, box: float) -> None:
    summary = progress.parse_results_csv(whole(sample))
    assert len(summary["rows"]) == 3 and summary["latest"]["losses"]["box"] == box


def test_results_csv_with_padded_headers_and_a_row_being_written() -> None:
    lines = whole("ultralytics/results.csv").splitlines()
    # Older ultralytics right-aligned every cell with spaces.
    padded = [",".join(cell.rjust(20) for cell in line.split(",")) for line in lines]
    summary = progress.parse_results_csv("\n".join(padded) + "\n4,2.1,0.1")
    assert [row["epoch"] for row in summary["rows"]] == [1, 2, 3]
    assert summary["latest"]["losses"] == {"box": 0.13011, "cls": 0.39449, "dfl": 0.07743}


def test_results_txt() -> None:
    summary = progress.parse_results_txt(whole("yolov7/results.txt"))
    assert [row["epoch"] for row in summary["rows"]] == [1, 2, 3]  # `0/2` .. `2/2`
    assert summary["latest"] == {
        "epoch": 3,
        "losses": {"box": 0.04444, "obj": 0.003692, "cls": 0.01787, "total": 0.066},
        "precision": 0.001649,
        "recall": 0.2222,
        "mAP50": 0.0005865,
        "mAP50-95": 0.0001475,
    }
    assert summary["best"]["epoch"] == 3
    assert progress.parse_results_txt(whole("yolov7/results_pipe.txt")) == summary


def test_results_txt_best_is_not_always_the_latest() -> None:
    summary = progress.parse_results_txt(whole("yolov7/noota_results.txt"))
    assert [row["mAP50-95"] for row in summary["rows"]] == [0.0001425, 0.0001615, 0.0001585]
    assert summary["best"]["epoch"] == 2 and summary["latest"]["epoch"] == 3
    assert summary["best"]["losses"]["total"] == 0.1325


def test_best_falls_back_to_map50() -> None:
    summary = progress.parse_results_csv("epoch,metrics/mAP50(B)\n1,0.4\n2,0.6\n3,0.5\n")
    assert summary["best"]["epoch"] == 2


def test_run_settings_of_both_trainers() -> None:
    args = progress.parse_run_settings(whole("ultralytics/args.yaml"))
    assert (args["epochs"], args["batch"], args["imgsz"], args["name"]) == (3, 4, 64, "u8")
    assert (args["save_dir"], args["amp"], args["time"], args["lr0"]) == ("/home/user/exp/runs/u8", False, None, 0.01)
    opt = progress.parse_run_settings(whole("yolov7/opt.yaml"))
    assert (opt["epochs"], opt["img_size"], opt["weights"], opt["freeze"]) == (3, [64, 64], "", [0])
    assert opt["save_dir"] == "/home/user/exp/runs7/y7"
    noota = progress.parse_run_settings(whole("yolov7/noota_opt.yaml"))
    assert (noota["hyp"], noota["name"]) == ("/home/user/exp/hyp.scratch.tiny.noota.yaml", "y7noota")
    hyp = progress.parse_run_settings(whole("yolov7/hyp.yaml"))
    assert (hyp["loss_ota"], hyp["mixup"], hyp["box"], hyp["anchor_t"]) == (1, 0.05, 0.05, 4.0)


def test_the_log_and_the_files_agree() -> None:
    args = progress.parse_run_settings(whole("ultralytics/args.yaml"))
    rows = progress.parse_results_csv(whole("ultralytics/results.csv"))["rows"]
    assert progress.parse_log_tail(tail("ultralytics/train_tty.log"))["epochs"] == args["epochs"] == len(rows)


def test_the_hosts_copy_reads_the_same(tmp_path: Path) -> None:
    # On a host the module is hostside.progress, from a copied folder, under Python run with -E -S.
    log = tmp_path / "train.log"
    log.write_text(tail("yolov7/train_pipe.log"), encoding="utf-8")
    code = (
        "import json, sys\nfrom hostside import progress\n"
        "print(json.dumps(progress.parse_log_tail(open(sys.argv[1], encoding='utf-8').read())))"
    )
    done = run_in_copy(copy_hostside(tmp_path / "hostside-copy"), code, str(log))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == json.loads(json.dumps(progress.parse_log_tail(log.read_text(encoding="utf-8"))))


def test_a_results_csv_with_accuracy_keeps_it_and_its_single_loss() -> None:
    from runner.hostside.progress import parse_results_csv

    text = (
        "epoch,time,train/loss,val/loss,metrics/accuracy,lr\n"
        "1,0.7,0.20204,0.11939,0.95792,0.5\n2,1.1,0.08456,0.08364,0.97458,0.49\n"
    )
    rows = parse_results_csv(text)["rows"]
    assert [row["accuracy"] for row in rows] == [0.95792, 0.97458]
    assert [row["losses"] for row in rows] == [{"loss": 0.20204}, {"loss": 0.08456}]
