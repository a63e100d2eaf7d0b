"""Durations as people write them: 30s, 10m, 1h, or plain seconds. One parser for the command line
(`runner fetch --every`) and the job file (`artifacts.NAME.sync_every`)."""

from __future__ import annotations

import math

UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_duration(value: object) -> float:
    """Seconds in value ("30s", "10m", "1h", "90", 90); ValueError, with a message for the user, if none."""
    if isinstance(value, bool):  # YAML's `yes`: a guess, never a duration
        raise ValueError(f"'{value}' is not a duration like 30s, 10m or 1h")
    text = str(value).strip().lower()
    number, unit = (text[:-1], text[-1]) if text[-1:] in UNITS else (text, "s")
    try:
        seconds = float(number) * UNITS[unit]
    except ValueError:
        raise ValueError(f"'{value}' is not a duration like 30s, 10m or 1h") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"'{value}' must be more than zero")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest of the forms parse_duration reads back: 600 -> 10m, 3600 -> 1h, 45 -> 45s."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
