"""`runner logs --lines N`: the last N lines as tail -n counts them."""

from __future__ import annotations

from runner.logs import _last_lines

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
