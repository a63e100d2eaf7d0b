"""What the host's monitor saw, for people and for scripts: stable `status --json` keys and the short
cells of the status table. The snapshot comes from the monitor (runner/hostside/monitor.py) through
the one probe per host; this module only reshapes it."""

from __future__ import annotations

import math
from typing import Any

MAIN_LOSSES = ("total", "box", "loss")  # the loss a person watches: YOLOv7's total, else the box loss


def monitor_document(snapshot: dict[str, Any] | None) -> dict[str, Any]:
    """The keys `status --json` always has, None where the monitor has not said (yet)."""
    snapshot = snapshot or {}
    got = snapshot.get("progress") or {}
    results = snapshot.get("results") or {}
    gpu_reading = snapshot.get("gpus") or {}
    document: dict[str, Any] = finite({
        "snapshot_at": snapshot.get("updated_at"),
        "progress": {key: got.get(key) for key in ("format", "phase", "epoch", "epochs", "batch", "batches",
                                                   "rate_its", "epoch_eta_s", "run_eta_s", "losses", "val")},
        "results": {key: results.get(key) for key in ("file", "epochs_done", "latest", "best")},
        "gpus": gpu_reading.get("gpus") or [],
        "gpu_tool": gpu_reading.get("tool"),
        "gpu_error": gpu_reading.get("error"),
        "system": snapshot.get("system"),
        "alerts": snapshot.get("alerts") or [],
    })  # fmt: skip
    return document


def finite(value: Any) -> Any:
    """NaN and infinities as the strings "nan", "inf", "-inf": a NaN loss is news, and strict JSON
    has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite(item) for item in value]
    return value


def table_cells(snapshot: dict[str, Any] | None) -> dict[str, str]:
    """EPOCH, IT/S, ETA, LOSS, mAP (best mAP50-95), GPU and ALERTS cells; "" where unknown."""
    document = monitor_document(snapshot)
    got, results = document["progress"], document["results"]
    return {
        "EPOCH": _epoch(got),
        "IT/S": _number(got["rate_its"]),
        "ETA": _eta(got["run_eta_s"] if got["run_eta_s"] is not None else got["epoch_eta_s"]),
        "LOSS": _main_loss(got["losses"] or (results["latest"] or {}).get("losses")),
        "mAP": _best_map(results["best"], got["val"]),
        "GPU": " ".join(_gpu(gpu) for gpu in document["gpus"]),
        "ALERTS": ",".join(sorted({alert["kind"] for alert in document["alerts"]})),
    }


def _epoch(got: dict[str, Any]) -> str:
    if got["epoch"] is None:
        return ""
    return f"{got['epoch']}/{got['epochs'] or '?'}"


def _number(value: Any) -> str:
    if value is None or isinstance(value, str):
        return "" if value is None else value
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _eta(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return ""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _main_loss(losses: dict[str, Any] | None) -> str:
    if not losses:
        return ""
    name = next((key for key in MAIN_LOSSES if key in losses), next(iter(losses)))
    return f"{name} {_number(losses[name])}"


def _best_map(best: dict[str, Any] | None, val: dict[str, Any] | None) -> str:
    for source in (best, val):
        if source and source.get("mAP50-95") is not None:
            return _number(source["mAP50-95"])
    return ""


def _gpu(gpu: dict[str, Any]) -> str:
    util = "" if gpu.get("util_pct") is None else f"{gpu['util_pct']:.0f}%"
    temps = [t for t in (gpu.get("temp_junction_c"), gpu.get("temp_edge_c")) if isinstance(t, (int, float))]
    temp = f"{max(temps):.0f}°C" if temps else ""
    used, total = gpu.get("vram_used_mib"), gpu.get("vram_total_mib")
    vram = (
        f"{used / 1024:.1f}/{total / 1024:.0f}G"
        if isinstance(used, (int, float)) and isinstance(total, (int, float))
        else ""
    )
    return " ".join(part for part in (util, temp, vram) if part) or "?"
