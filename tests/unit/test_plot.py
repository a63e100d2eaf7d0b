"""`runner plot`: the agent's plotdata answer, the panels built from it, and the matplotlib figure drawn
from recorded results files and telemetry lines made by the monitor's own telemetry_line() from recorded
nvidia-smi and rocm-smi output."""

from __future__ import annotations

import csv
import importlib.util
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from runner.base.errors import NotFound, UsageError
from runner.cli import plot
from runner.hostside import agent, gpus, monitor, progress
from runner.hostside.hostfiles import PROTOCOL
from runner.jobs.state import Job, JobState
from tests.conftest import SAMPLES

# The `plot` extra, which .ci/run installs; the agent's side and the missing-extra error need none.
needs_matplotlib = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="pip install '.[plot]'")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TWO_NVIDIA_GPUS = "telemetry/nvidia-smi_query-gpu_csv-header_2gpu_gtx1080ti-gtx1060.csv"
ONE_AMD_GPU = "telemetry/rocm-smi_json_rx6700xt_rocm5.7.1_telegraf-fixture.json"


def recorded_telemetry(sample: str, parse: Any, count: int = 90) -> list[dict[str, Any]]:
    """count telemetry lines 10 s apart, as the monitor writes them, from one recorded GPU reading: the
    training's load ramps up over the first third and stays (utilization, temperature, power, VRAM follow)."""
    base = parse((SAMPLES / sample).read_text(errors="replace"))
    lines = []
    for step in range(count):
        load = min(1.0, step / (count / 3))
        reading = {"tool": base["tool"], "error": None, "gpus": [dict(gpu) for gpu in base["gpus"]]}
        for gpu in reading["gpus"]:
            gpu["util_pct"] = round(gpu["util_pct"] + (95 - gpu["util_pct"]) * load, 1)
            for sensor in ("temp_edge_c", "temp_junction_c", "temp_mem_c"):
                if gpu[sensor] is not None:
                    gpu[sensor] = round(gpu[sensor] + 25 * load + (step % 5) * 0.4, 1)
            gpu["power_w"] = round(gpu["power_w"] + 150 * load, 2)
            free = gpu["vram_total_mib"] - gpu["vram_used_mib"]
            gpu["vram_used_mib"] = gpu["vram_used_mib"] + round(0.6 * free * load)
        snapshot = {
            "updated_at": 1_750_000_000.0 + 10 * step,
            "progress": {"epoch": 1 + step // 30, "epochs": 3, "batch": step % 30, "rate_its": 2.5, "losses": None},
            "system": {"load1": 1.5, "mem_used_mib": 4096},
            "gpus": reading,
        }
        lines.append(json.loads(json.dumps(monitor.telemetry_line(snapshot))))  # as it arrives: through JSON
    return lines


def results(sample: str) -> dict[str, Any]:
    text = (SAMPLES / sample).read_text()
    return (progress.parse_results_csv if sample.endswith(".csv") else progress.parse_results_txt)(text)


def plot_data(rows_sample: str | None, telemetry: list[dict[str, Any]]) -> plot.PlotData:
    rows = results(rows_sample)["rows"] if rows_sample else []
    return plot.PlotData(telemetry, rows, rows_sample, len(telemetry))


def figure_of(data: plot.PlotData) -> Any:
    return plot.draw(plot.build_panels(data), "test  ·  0123abcd  ·  on local")


def axes_named(figure: Any, title: str) -> Any:
    (found,) = [axes for axes in figure.axes if axes.get_title() == title]
    return found


def lines_of(axes: Any) -> dict[str, Any]:
    return {line.get_label(): line for line in axes.get_lines()}


def same(values: list[float], expected: list[float | None]) -> bool:
    """Equal where both are numbers, and NaN exactly where expected has no number."""
    if len(values) != len(expected):
        return False
    for value, want in zip(values, expected, strict=True):
        if want is None or (isinstance(want, float) and math.isnan(want)):
            if not math.isnan(value):
                return False
        elif not math.isclose(value, want, rel_tol=1e-9, abs_tol=1e-12):
            return False
    return True


def csv_column(sample: str, column: str) -> list[float]:
    with (SAMPLES / sample).open() as handle:
        return [float(row[column]) for row in csv.DictReader(handle, skipinitialspace=True)]


def no_data(axes: Any) -> bool:
    return [text.get_text() for text in axes.texts] == ["no data"] and not axes.get_lines()


# ---------------------------------------------------------------- the figure


@needs_matplotlib
def test_figure_of_an_ultralytics_run_on_two_nvidia_gpus() -> None:
    telemetry = recorded_telemetry(TWO_NVIDIA_GPUS, gpus.parse_nvidia_smi_csv)
    figure = figure_of(plot_data("ultralytics/results.csv", telemetry))

    assert [axes.get_title() for axes in figure.axes] == list(plot.PANEL_TITLES)
    assert [axes.get_title() for axes in figure.axes] == [
        "Losses per epoch",
        "Validation metrics per epoch",
        "GPU utilization (%)",
        "GPU temperature (°C)",
        "GPU power (W)",
        "GPU VRAM used (GiB)",
    ]
    assert figure._suptitle.get_text() == "test  ·  0123abcd  ·  on local"
    epochs = csv_column("ultralytics/results.csv", "epoch")
    assert epochs == [1.0, 2.0, 3.0]

    losses = lines_of(axes_named(figure, "Losses per epoch"))
    assert list(losses) == ["box", "cls", "dfl"]
    for name in losses:
        assert list(losses[name].get_xdata()) == epochs
        assert same(list(losses[name].get_ydata()), csv_column("ultralytics/results.csv", f"train/{name}_loss"))

    metrics = lines_of(axes_named(figure, "Validation metrics per epoch"))
    assert list(metrics) == ["precision", "recall", "mAP50", "mAP50-95"]
    assert same(list(metrics["mAP50-95"].get_ydata()), csv_column("ultralytics/results.csv", "metrics/mAP50-95(B)"))
    assert same(list(metrics["precision"].get_ydata()), csv_column("ultralytics/results.csv", "metrics/precision(B)"))

    minutes = [(line["t"] - telemetry[0]["t"]) / 60 for line in telemetry]
    utilization = lines_of(axes_named(figure, "GPU utilization (%)"))
    assert list(utilization) == ["GPU0", "GPU1"]
    for index, label in enumerate(utilization):
        assert same(list(utilization[label].get_xdata()), minutes)
        assert same(list(utilization[label].get_ydata()), [line["gpus"][index]["util_pct"] for line in telemetry])
    assert utilization["GPU0"].get_ydata()[0] == 36.0  # the recorded GTX 1080 Ti's reading, before the ramp
    assert minutes[-1] == pytest.approx(89 * 10 / 60)

    # nvidia-smi has one temperature sensor (temp_edge_c); the empty junction and memory ones are left out.
    assert list(lines_of(axes_named(figure, "GPU temperature (°C)"))) == ["GPU0 edge", "GPU1 edge"]
    power = lines_of(axes_named(figure, "GPU power (W)"))
    assert same(list(power["GPU1"].get_ydata()), [line["gpus"][1]["power_w"] for line in telemetry])
    assert power["GPU1"].get_ydata()[0] == 5.68

    vram = lines_of(axes_named(figure, "GPU VRAM used (GiB)"))
    assert list(vram) == ["GPU0", "GPU0 total", "GPU1", "GPU1 total"]
    assert same(list(vram["GPU0"].get_ydata()), [line["gpus"][0]["vram_used_mib"] / 1024 for line in telemetry])
    assert set(vram["GPU1 total"].get_ydata()) == {6078 / 1024}
    assert vram["GPU1 total"].get_linestyle() == "--"
    assert vram["GPU1 total"].get_color() == vram["GPU1"].get_color()


@needs_matplotlib
def test_figure_of_a_yolov7_run_counts_its_epochs_from_one() -> None:
    figure = figure_of(plot_data("yolov7/results.txt", []))
    losses = lines_of(axes_named(figure, "Losses per epoch"))
    assert list(losses) == ["box", "obj", "cls", "total"]
    assert list(losses["total"].get_xdata()) == [1.0, 2.0, 3.0]
    columns = [line.split() for line in (SAMPLES / "yolov7/results.txt").read_text().splitlines()]
    assert same(list(losses["total"].get_ydata()), [float(row[5]) for row in columns])
    metrics = lines_of(axes_named(figure, "Validation metrics per epoch"))
    assert same(list(metrics["mAP50"].get_ydata()), [float(row[10]) for row in columns])
    assert same(list(metrics["mAP50-95"].get_ydata()), [float(row[11]) for row in columns])
    for title in plot.PANEL_TITLES[2:]:  # no telemetry: the panels stay, each with its note
        assert no_data(axes_named(figure, title))


@needs_matplotlib
def test_an_amd_gpu_shows_its_three_temperature_sensors() -> None:
    telemetry = recorded_telemetry(ONE_AMD_GPU, gpus.parse_rocm_smi_json, count=12)
    figure = figure_of(plot_data(None, telemetry))
    temperatures = lines_of(axes_named(figure, "GPU temperature (°C)"))
    assert list(temperatures) == ["GPU0 edge", "GPU0 junction", "GPU0 mem"]
    assert temperatures["GPU0 junction"].get_ydata()[0] == 47.0  # the recorded reading
    assert same(list(temperatures["GPU0 mem"].get_ydata()), [line["gpus"][0]["temp_mem_c"] for line in telemetry])
    assert no_data(axes_named(figure, "Losses per epoch"))


@needs_matplotlib
def test_nan_losses_missing_gpus_and_missing_readings_are_gaps() -> None:
    rows = results("ultralytics/results.csv")["rows"]
    rows[1]["losses"]["box"] = math.nan  # what a diverged training writes
    telemetry = recorded_telemetry(TWO_NVIDIA_GPUS, gpus.parse_nvidia_smi_csv, count=4)
    telemetry[1]["gpus"] = telemetry[1]["gpus"][:1]  # GPU1 fell off the bus for one sample
    telemetry[2]["gpus"][0]["power_w"] = None  # the tool said N/A
    telemetry[3]["gpus"][0]["util_pct"] = math.inf
    panels = {panel.title: panel for panel in plot.build_panels(plot.PlotData(telemetry, rows, None, 4))}

    box = panels["Losses per epoch"].series[0]
    assert box.label == "box" and math.isnan(box.y[1]) and not math.isnan(box.y[2])
    utilization = {line.label: line.y for line in panels["GPU utilization (%)"].series}
    assert math.isnan(utilization["GPU1"][1]) and math.isnan(utilization["GPU0"][3])
    power = {line.label: line.y for line in panels["GPU power (W)"].series}
    assert math.isnan(power["GPU0"][2]) and not math.isnan(power["GPU1"][2])
    assert plot.png_bytes(plot.draw(list(panels.values()), "gaps")).startswith(PNG_SIGNATURE)


@needs_matplotlib
def test_nothing_to_show_keeps_all_six_panels_with_a_note() -> None:
    figure = figure_of(plot.PlotData([], [], None, 0))
    assert [axes.get_title() for axes in figure.axes] == list(plot.PANEL_TITLES)
    assert all(no_data(axes) for axes in figure.axes)
    assert plot.png_bytes(figure).startswith(PNG_SIGNATURE)


@needs_matplotlib
def test_the_png_is_a_real_png_of_the_figures_size() -> None:
    telemetry = recorded_telemetry(TWO_NVIDIA_GPUS, gpus.parse_nvidia_smi_csv)
    png = plot.png_bytes(figure_of(plot_data("ultralytics/results.csv", telemetry)))
    assert png.startswith(PNG_SIGNATURE)
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")  # the IHDR chunk
    assert (width, height) == (1400, 1200)
    assert len(png) > 20_000


# ---------------------------------------------------------------- without matplotlib


def test_without_matplotlib_the_error_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    with pytest.raises(UsageError) as raised:
        plot.require_matplotlib()
    assert raised.value.exit_code == 2
    assert "pip install 'runner[plot]'" in str(raised.value)
    with pytest.raises(UsageError):
        plot.draw([], "no matplotlib")


def test_runner_plot_without_matplotlib_exits_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from runner.cli import app as cli

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setenv("RUNNER_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(sys, "argv", ["runner", "plot", "demo"])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "runner: runner plot needs matplotlib, an optional extra: pip install 'runner[plot]'\n"


# ---------------------------------------------------------------- where the PNG goes


def a_job(job_dir: str | None = "/nowhere") -> Job:
    return Job(
        "0123abcd",
        "demo",
        "local",
        JobState.SUCCEEDED,
        {},
        "demo.yaml",
        job_dir,
        None,
        0.0,
        None,
        None,
        0,
        None,
        None,
        None,
    )


def test_output_path_defaults_to_name_and_id_here_or_in_a_folder(tmp_path: Path) -> None:
    assert plot.output_path(a_job(), None) == Path("demo-0123abcd.png")
    assert plot.output_path(a_job(), tmp_path) == tmp_path / "demo-0123abcd.png"
    assert plot.output_path(a_job(), tmp_path / "x.PNG") == tmp_path / "x.PNG"
    with pytest.raises(UsageError, match="writes PNG"):
        plot.output_path(a_job(), tmp_path / "x.svg")


def test_a_job_that_never_reached_its_host_has_nothing_to_plot() -> None:
    with pytest.raises(NotFound, match="nothing to plot"):
        plot.fetch_plot_data(a_job(job_dir=None))


# ---------------------------------------------------------------- the agent's side


def agent_plotdata(job_dir: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, agent.__file__, "plotdata", str(job_dir)], capture_output=True, text=True, check=True
    )
    answer = json.loads(done.stdout)
    assert answer.pop("protocol") == PROTOCOL  # every answer carries it; the rest is the plot's
    return answer


def test_plotdata_answers_telemetry_and_results_in_one_document(tmp_path: Path) -> None:
    run = tmp_path / "work" / "runs" / "detect" / "train"
    run.mkdir(parents=True)
    (run / "results.csv").write_bytes((SAMPLES / "ultralytics" / "results.csv").read_bytes())
    telemetry = recorded_telemetry(TWO_NVIDIA_GPUS, gpus.parse_nvidia_smi_csv, count=5)
    telemetry[2]["losses"] = {"box": math.nan}  # the monitor writes NaN for a nan loss
    written = "".join(json.dumps(line) + "\n" for line in telemetry)
    (tmp_path / "telemetry.jsonl").write_text(written + '{"t": 17500')  # the line the monitor is writing now

    answer = agent_plotdata(tmp_path)
    assert answer["results"]["file"] == "runs/detect/train/results.csv"
    assert answer["results"]["rows"] == results("ultralytics/results.csv")["rows"]
    assert answer["telemetry_lines"] == 6
    assert len(answer["telemetry"]) == 5 and math.isnan(answer["telemetry"][2]["losses"]["box"])
    assert answer["telemetry"][4] == telemetry[4]
    data = plot.PlotData.from_agent(answer)
    assert (len(data.telemetry), len(data.rows), data.results_file) == (5, 3, "runs/detect/train/results.csv")


def test_plotdata_of_a_job_with_nothing_written_yet(tmp_path: Path) -> None:
    assert agent_plotdata(tmp_path) == {"telemetry": [], "telemetry_lines": 0, "results": {"file": None, "rows": []}}


@pytest.mark.parametrize("lines", [1, 2, 5000, 5001, 5002, 10_000, 123_457])
def test_long_telemetry_is_thinned_on_the_host_evenly_keeping_first_and_last(tmp_path: Path, lines: int) -> None:
    path = tmp_path / "telemetry.jsonl"
    path.write_text("".join(f'{{"t": {index}}}\n' for index in range(lines)))
    samples, count = agent.sample_jsonl(str(path), 5000)
    times = [sample["t"] for sample in samples]
    assert count == lines
    assert times[0] == 0 and times[-1] == lines - 1
    assert len(times) <= 5001
    assert len(times) >= min(lines, 2500)
    strides = {later - earlier for earlier, later in itertools.pairwise(times[:-1])}
    assert len(strides) <= 1  # even spacing; only the step to the last line may be shorter
    assert times == sorted(set(times))
