"""`runner plot`: one PNG of a job's losses and validation metrics per epoch, and its GPUs over time.

The host's agent answers in one round trip (`agent plotdata`: telemetry.jsonl thinned there to a few
thousand samples, and the results file's rows). The panels are plain data (Panel, Series), built
without matplotlib; only `draw` needs it, an optional extra drawn with the Agg backend (no display).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.base.atomicfile import write_atomically
from runner.base.errors import NotFound, RunnerError, UsageError
from runner.jobs.state import Job

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

INSTALL_HINT = "runner plot needs matplotlib, an optional extra: pip install 'runner[plot]'"
LOSSES = "Losses per epoch"
METRICS = "Validation metrics per epoch"
UTILIZATION = "GPU utilization (%)"
TEMPERATURE = "GPU temperature (°C)"
POWER = "GPU power (W)"
VRAM = "GPU VRAM used (GiB)"
PANEL_TITLES = (LOSSES, METRICS, UTILIZATION, TEMPERATURE, POWER, VRAM)  # row by row, two a row
METRIC_KEYS = ("precision", "recall", "mAP50", "mAP50-95", "accuracy")
TEMPERATURE_SENSORS = (("temp_edge_c", "edge"), ("temp_junction_c", "junction"), ("temp_mem_c", "mem"))
EPOCH_AXIS = "epoch"
TIME_AXIS = "minutes since the first sample"
AGENT_TIMEOUT_S = 120.0  # reading weeks of telemetry on the host, and a few MB of JSON over a slow link
MARKERS_UP_TO = 60  # points per line: fewer get dots, so a run of one epoch or one sample still shows
FIGURE_INCHES = (14, 12)
DPI = 100


@dataclass(frozen=True)
class Series:
    label: str
    x: list[float]
    y: list[float]  # NaN where there is no value: drawn as a gap
    dashed: bool = False  # drawn in the colour of the series before it (a GPU's VRAM total beside its use)


@dataclass(frozen=True)
class Panel:
    title: str
    xlabel: str
    series: list[Series] = field(default_factory=list)


@dataclass(frozen=True)
class PlotData:
    telemetry: list[dict[str, Any]]  # telemetry.jsonl's lines, as runner/hostside/monitor.py writes them
    rows: list[dict[str, Any]]  # the results file's rows, as runner/hostside/progress.py parses them
    results_file: str | None
    telemetry_lines: int  # in the host's file; more than len(telemetry) when the agent thinned it

    @classmethod
    def from_agent(cls, document: dict[str, Any]) -> PlotData:
        results = document.get("results") or {}
        telemetry = [line for line in document.get("telemetry") or [] if isinstance(line, dict)]
        return cls(telemetry, results.get("rows") or [], results.get("file"), document.get("telemetry_lines", 0))


@dataclass(frozen=True)
class PlotResult:
    path: Path
    size: int
    panels: list[Panel]
    data: PlotData


def require_matplotlib() -> None:
    """Exit 2 (UsageError) when matplotlib is missing: nothing failed, the user has to install an extra."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError(INSTALL_HINT) from None


def plot_job(job: Job, out: Path | None) -> PlotResult:
    require_matplotlib()
    path = output_path(job, out)
    data = fetch_plot_data(job)
    panels = build_panels(data)
    png = png_bytes(draw(panels, f"{job.name}  ·  {job.id}  ·  on {job.host}"))
    write_atomically(path, png, 0o644)
    return PlotResult(path, len(png), panels, data)


def output_path(job: Job, out: Path | None) -> Path:
    default_name = f"{job.name}-{job.id}.png"
    if out is None:
        return Path(default_name)
    if out.is_dir():
        return out / default_name
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out {out}: runner plot writes PNG; name a .png file or a folder")
    return out


def fetch_plot_data(job: Job) -> PlotData:
    from runner.jobs.layout import job_host, run_agent

    if not job.job_dir:
        raise NotFound(f"job {job.id} never reached its host: there is nothing to plot")
    host = job_host(job.host, job.job_dir)
    result = run_agent(host, "plotdata", job.job_dir, timeout=max(host.patience, AGENT_TIMEOUT_S)).check()
    try:
        document = json.loads(result.text)  # NaN losses arrive as NaN: Python's json reads them
    except ValueError as exc:
        raise RunnerError(f"host '{host.name}': the agent's plotdata answered unreadable output ({exc})") from None
    return PlotData.from_agent(document)


def plot_document(result: PlotResult) -> dict[str, Any]:
    return {
        "path": str(result.path.resolve()),
        "bytes": result.size,
        "panels": [panel.title for panel in result.panels],
        "no_data": [panel.title for panel in result.panels if not panel.series],
        "points": len(result.data.telemetry),
        "telemetry_lines": result.data.telemetry_lines,
        "epochs": len(result.data.rows),
        "results_file": result.data.results_file,
    }


def plot_summary(result: PlotResult) -> str:
    """One line for stderr: what the PNG was drawn from, and which panels had nothing to show."""
    data = result.data
    thinned = f" (of {data.telemetry_lines})" if data.telemetry_lines > len(data.telemetry) else ""
    text = (
        f"{len(result.panels)} panels from {len(data.rows)} epochs"
        f" ({data.results_file or 'no results file yet'}) and {len(data.telemetry)} telemetry samples{thinned}"
    )
    empty = [panel.title for panel in result.panels if not panel.series]
    return text + (f"; no data: {', '.join(empty)}" if empty else "")


# ---------------------------------------------------------------- panels, as data


def build_panels(data: PlotData) -> list[Panel]:
    minutes = _minutes(data.telemetry)
    gpus = _gpu_ids(data.telemetry)
    return [
        Panel(LOSSES, EPOCH_AXIS, loss_series(data.rows)),
        Panel(METRICS, EPOCH_AXIS, metric_series(data.rows)),
        Panel(UTILIZATION, TIME_AXIS, gpu_series(data.telemetry, minutes, gpus, "util_pct")),
        Panel(TEMPERATURE, TIME_AXIS, temperature_series(data.telemetry, minutes, gpus)),
        Panel(POWER, TIME_AXIS, gpu_series(data.telemetry, minutes, gpus, "power_w")),
        Panel(VRAM, TIME_AXIS, vram_series(data.telemetry, minutes, gpus)),
    ]


def loss_series(rows: list[dict[str, Any]]) -> list[Series]:
    epochs = [float(row["epoch"]) for row in rows]
    names = list(dict.fromkeys(name for row in rows for name in row.get("losses") or {}))
    series = [Series(name, epochs, [_number((row.get("losses") or {}).get(name)) for row in rows]) for name in names]
    return [line for line in series if _has_values(line)]


def metric_series(rows: list[dict[str, Any]]) -> list[Series]:
    epochs = [float(row["epoch"]) for row in rows]
    series = [Series(key, epochs, [_number(row.get(key)) for row in rows]) for key in METRIC_KEYS]
    return [line for line in series if _has_values(line)]


def gpu_series(
    telemetry: list[dict[str, Any]],
    minutes: list[float],
    gpus: list[str],
    key: str,
    suffix: str = "",
    scale: float = 1.0,
) -> list[Series]:
    series = []
    for gpu in gpus:
        values = [_number(_gpu_in(sample, gpu).get(key)) / scale for sample in telemetry]
        series.append(Series(f"GPU{gpu}{suffix}", minutes, values))
    return [line for line in series if _has_values(line)]


def temperature_series(telemetry: list[dict[str, Any]], minutes: list[float], gpus: list[str]) -> list[Series]:
    return [
        line
        for gpu in gpus
        for key, sensor in TEMPERATURE_SENSORS
        for line in gpu_series(telemetry, minutes, [gpu], key, f" {sensor}")
    ]


def vram_series(telemetry: list[dict[str, Any]], minutes: list[float], gpus: list[str]) -> list[Series]:
    """Per GPU its use, and its total dashed beside it: how close the run came to running out."""
    series = []
    for gpu in gpus:
        used = gpu_series(telemetry, minutes, [gpu], "vram_used_mib", "", 1024.0)
        total = gpu_series(telemetry, minutes, [gpu], "vram_total_mib", " total", 1024.0)
        series += used + [Series(line.label, line.x, line.y, dashed=True) for line in total if used]
    return series


def _minutes(telemetry: list[dict[str, Any]]) -> list[float]:
    times = [_number(sample.get("t")) for sample in telemetry]
    start = min((t for t in times if math.isfinite(t)), default=0.0)
    return [(t - start) / 60.0 for t in times]


def _gpu_ids(telemetry: list[dict[str, Any]]) -> list[str]:
    """Each GPU once, in the order first seen; by its index, or its place where the tool gave none."""
    return list(
        dict.fromkeys(_gpu_id(gpu, place) for sample in telemetry for place, gpu in enumerate(sample.get("gpus") or []))
    )


def _gpu_in(sample: dict[str, Any], gpu: str) -> dict[str, Any]:
    reading: dict[str, Any]
    for place, reading in enumerate(sample.get("gpus") or []):
        if _gpu_id(reading, place) == gpu:
            return reading
    return {}


def _gpu_id(reading: dict[str, Any], place: int) -> str:
    index = reading.get("index")
    return str(place if index is None else index)


def _number(value: Any) -> float:
    """A finite float, or NaN for None, text, NaN and infinities: a gap in the line, not a spike."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value) if math.isfinite(value) else math.nan


def _has_values(series: Series) -> bool:
    return any(not math.isnan(value) for value in series.y)


# ---------------------------------------------------------------- the figure


def draw(panels: list[Panel], title: str) -> Figure:
    """The panels on a 3 x 2 grid, on an Agg canvas: pyplot and its global state are never touched."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIGURE_INCHES, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(title, fontsize=15)
    for axes, panel in zip(figure.subplots(3, 2).flat, panels, strict=True):
        _draw_panel(axes, panel)
    return figure


def _draw_panel(axes: Axes, panel: Panel) -> None:
    from matplotlib.ticker import MaxNLocator

    axes.set_title(panel.title)
    axes.set_xlabel(panel.xlabel)
    if not panel.series:  # kept, with a note, so every plot has the same layout
        axes.text(0.5, 0.5, "no data", transform=axes.transAxes, ha="center", va="center", color="grey", fontsize=12)
        axes.set_xticks([])
        axes.set_yticks([])
        return
    axes.grid(True, alpha=0.3)
    if panel.xlabel == EPOCH_AXIS:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    previous = None
    for series in panel.series:
        marker = "." if len(series.x) <= MARKERS_UP_TO else None
        color = previous.get_color() if series.dashed and previous else None  # None: the next in the cycle
        (previous,) = axes.plot(
            series.x, series.y, label=series.label, marker=marker, color=color, linestyle="--" if series.dashed else "-"
        )
    axes.legend(fontsize="small")


def png_bytes(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
