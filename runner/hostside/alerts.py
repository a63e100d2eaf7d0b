"""Alerts a training run can raise, read from its log tail, GPU readings and disk space.

Standard library only, Python >= 3.7: copied to the host beside agent.py and imported there as `alerts`.
Pure functions: the agent owns the state (how long a run has been stalled, which alert it already sent).
Every alert is a dict {kind, message, ...} with kind one of: oom, nan_loss, traceback, gpu_unsupported,
corrupt_labels, gpu_hot, disk_full.
"""

import re

ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
OUT_OF_MEMORY = re.compile(
    r"torch\.(?:cuda\.)?OutOfMemoryError|CUDA out of memory|HIP out of memory"
    r"|hipErrorOutOfMemory"
)
HIP = re.compile(r"HIP out of memory|hipError")
# A training progress row: `  1/100   2.37G   nan   nan ...   16   640: 100%|...` (ultralytics, YOLOv7).
PROGRESS_ROW = re.compile(r"^\s*\d+/\d+\s+\S+((?:\s+\S+)+?)\s*:\s")
NOT_FINITE = re.compile(r"^[-+]?(?:nan|inf)$", re.IGNORECASE)
TRACEBACK_START = "Traceback (most recent call last):"
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit|Warning)?\b.*")
UNSUPPORTED_GPU = re.compile(r"with CUDA capability (sm_\d+) is not compatible with the current PyTorch installation")
SUPPORTED_ARCHS = re.compile(r"supports CUDA capabilities ((?:sm_\d+\s*)+)")
CORRUPT_LABEL = re.compile(r"ignoring corrupt image/label: (.*)")
TRACEBACK_LINES = 10
TRACEBACK_MAX_LINES_AFTER = 20  # an older traceback followed by this much output no longer ends the log
# The disk_full floor's cap (see disk_almost_full): room for a few checkpoints of the largest models.
DISK_FLOOR_CAP_BYTES = 10 * 1024**3
DEFAULT_TEMPERATURE_LIMITS = {"temp_edge_c": 90.0, "temp_junction_c": 100.0, "temp_mem_c": 95.0}


def log_alerts(text, losses=None):
    """Alerts in a log tail (decoded text, \\r and ANSI as written). `losses` is progress.parse_log_tail's,
    when the agent has it; without it the latest progress row is read here for NaN/inf."""
    lines = _visible_lines(text or "")
    found = []
    for detector in (_out_of_memory, _gpu_unsupported, _corrupt_labels):
        alert = detector(lines)
        if alert:
            found.append(alert)
    nan = _nan_loss(lines, losses)
    if nan:
        found.append(nan)
    crash = _final_traceback(lines)
    if crash:
        found.append(crash)
    return found


def gpu_too_hot(gpus, limits=None):
    """One gpu_hot alert per GPU sensor at or above its limit (°C); limits default per sensor."""
    limits = dict(DEFAULT_TEMPERATURE_LIMITS, **(limits or {}))
    found = []
    for gpu in gpus or []:
        for sensor, limit in sorted(limits.items()):
            value = gpu.get(sensor)
            if value is not None and value >= limit:
                found.append(
                    {
                        "kind": "gpu_hot",
                        "gpu": gpu.get("index"),
                        "sensor": sensor,
                        "value_c": value,
                        "limit_c": limit,
                        "message": "GPU %s %s sensor at %.0f °C (limit %.0f °C)"
                        % (gpu.get("index"), sensor[5:-2], value, limit),
                    }
                )
    return found


def disk_almost_full(free_bytes, total_bytes, min_free_fraction=0.05, cap_bytes=DISK_FLOOR_CAP_BYTES):
    """[disk_full alert] when the free space is below the floor, else []. The floor is min_free_fraction
    of the disk (5%: about two epochs' checkpoints on the usual 20-100 GB training disk, and where
    ext4's root reserve begins), capped at cap_bytes: on a 4 TB disk 5% would cry wolf at 200 GB free.
    A disk with nothing free always alerts."""
    if not total_bytes or free_bytes is None:
        return []
    floor = min(total_bytes * min_free_fraction, cap_bytes)
    if free_bytes >= floor and free_bytes > 0:
        return []
    message = "disk almost full: %s free of %s (%.1f%%)" % (
        _size(free_bytes),
        _size(total_bytes),
        100.0 * free_bytes / total_bytes,
    )
    if free_bytes <= 0:
        message = "disk full: nothing free of %s" % _size(total_bytes)
    return [
        {
            "kind": "disk_full",
            "free_bytes": free_bytes,
            "total_bytes": total_bytes,
            "floor_bytes": int(floor),
            "message": message,
        }
    ]


def _size(count):
    """3.0 GiB, 320.0 MiB: a small disk must not read as 0.0 GiB free."""
    gib, mib = 1024.0**3, 1024.0**2
    return "%.1f GiB" % (count / gib) if count >= gib else "%.1f MiB" % (count / mib)


def _visible_lines(text):
    # Each \r-segment of a progress bar is a complete redraw, so segments read as lines here.
    return [line.rstrip() for line in re.split(r"[\r\n]", ESCAPE.sub("", text)) if line.strip()]


def _out_of_memory(lines):
    for line in reversed(lines):
        if OUT_OF_MEMORY.search(line):
            backend = "hip" if HIP.search(line) else "cuda"
            return {"kind": "oom", "backend": backend, "message": line.strip()[:500]}
    return None


def _gpu_unsupported(lines):
    for number, line in enumerate(lines):
        match = UNSUPPORTED_GPU.search(line)
        if match:
            supported = SUPPORTED_ARCHS.search(" ".join(lines[number + 1 : number + 2]))
            return {
                "kind": "gpu_unsupported",
                "arch": match.group(1),
                "supported": supported.group(1).split() if supported else None,
                "message": line.strip(),
            }
    return None


def _corrupt_labels(lines):
    reasons = [match.group(1).strip() for match in (CORRUPT_LABEL.search(line) for line in lines) if match]
    if not reasons:
        return None
    return {
        "kind": "corrupt_labels",
        "count": len(reasons),
        "message": "%d images ignored for corrupt labels, first: %s" % (len(reasons), reasons[0]),
    }


def _nan_loss(lines, losses):
    if losses:
        names = [name for name, value in losses.items() if value is not None and not _finite(value)]
    else:
        names = _not_finite_columns(lines)
    if not names:
        return None
    return {"kind": "nan_loss", "losses": names, "message": "loss is NaN or infinite: %s" % ", ".join(names)}


def _finite(value):
    return value == value and value not in (float("inf"), float("-inf"))  # NaN is the one value unequal to itself


def _not_finite_columns(lines):
    """Positions (`column 1`..) of NaN/inf values in the latest progress row, or []."""
    for line in reversed(lines):
        row = PROGRESS_ROW.match(line)
        if row:
            values = row.group(1).split()
            return ["column %d" % (n + 1) for n, value in enumerate(values) if NOT_FINITE.match(value)]
    return []


def _final_traceback(lines):
    """The last traceback when nothing much came after it: its last lines, ending with the exception."""
    start = next((n for n in range(len(lines) - 1, -1, -1) if lines[n].strip() == TRACEBACK_START), None)
    if start is None:
        return None
    end = next((n for n in range(start + 1, len(lines)) if not lines[n][:1].isspace()), None)
    if end is None or len(lines) - 1 - end > TRACEBACK_MAX_LINES_AFTER or not EXCEPTION_LINE.match(lines[end]):
        return None
    if any(PROGRESS_ROW.match(line) for line in lines[end + 1 :]):
        return None  # training went on past it
    exception = lines[end].strip()
    return {
        "kind": "traceback",
        "exception": exception.split(":", 1)[0],
        "lines": lines[max(start, end + 1 - TRACEBACK_LINES) : end + 1],
        "message": exception[:500],
    }
