"""alerts.py against real error texts and recorded trainings: out of memory, NaN loss, a final traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.hostside import alerts, gpus, progress

# Byte-for-byte copies of shared/samples, so the suite runs from a plain clone.
SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "samples"


def sample(name: str) -> str:
    return (SAMPLES / name).read_bytes().decode("utf-8", "replace")


def kinds(found: list[dict]) -> list[str]:
    return [alert["kind"] for alert in found]


def test_cuda_out_of_memory_torch_2_5_class_name() -> None:
    (alert,) = alerts.log_alerts(sample("telemetry/err_torch_cuda-oom_torch2x_rtx5080.txt"))
    assert (alert["kind"], alert["backend"]) == ("oom", "cuda")
    assert alert["message"].startswith(
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB. "
        "GPU 0 has a total capacity of 15.48 GiB of which 17.75 MiB is free."
    )


@pytest.mark.parametrize(
    ("line", "backend"),
    [
        # torch < 2.5 names the class torch.cuda.OutOfMemoryError, with the same body.
        ("torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.", "cuda"),
        ("RuntimeError: HIP out of memory. Tried to allocate 1.50 GiB (GPU 0; 7.98 GiB total capacity)", "hip"),
        ("RuntimeError: hipErrorOutOfMemory", "hip"),
    ],
)
def test_other_out_of_memory_spellings(line: str, backend: str) -> None:
    found = alerts.log_alerts("epoch 3\n" + line + "\n")
    assert [(alert["kind"], alert["backend"]) for alert in found] == [("oom", backend)]


def test_nan_loss_from_the_progress_row() -> None:
    text = sample("telemetry/log_yolo_nan-loss_gtx1660ti.txt")
    (alert,) = alerts.log_alerts(text)
    assert alert["kind"] == "nan_loss"
    assert alert["losses"] == ["column 1", "column 2", "column 3", "column 4"]  # no names without the parse


def test_nan_loss_named_by_the_parsed_losses() -> None:
    text = sample("telemetry/log_yolo_nan-loss_gtx1660ti.txt")
    (alert,) = alerts.log_alerts(text, progress.parse_log_tail(text)["losses"])
    assert alert["losses"] == ["box", "seg", "cls", "dfl"]
    assert alert["message"] == "loss is NaN or infinite: box, seg, cls, dfl"


def test_an_inf_loss_counts_too() -> None:
    assert kinds(alerts.log_alerts("", {"box": 0.5, "cls": float("inf")})) == ["nan_loss"]


def test_final_traceback_of_a_rocm_conv2d_failure() -> None:
    (alert,) = alerts.log_alerts(sample("telemetry/err_torch_miopenStatusUnknownError_conv2d_rocm5.7.txt"))
    assert (alert["kind"], alert["exception"]) == ("traceback", "RuntimeError")
    assert alert["message"] == "RuntimeError: miopenStatusUnknownError"
    assert len(alert["lines"]) == 10
    assert alert["lines"][-1] == "RuntimeError: miopenStatusUnknownError"
    assert alert["lines"][-2] == "    img = conv2d(img, kernel, groups=img.shape[-3])"


def test_final_traceback_of_yolov7_on_a_bad_label() -> None:
    found = alerts.log_alerts(sample("yolov7/bad_label_pipe.log"))
    (alert,) = found
    assert alert["exception"] == "AssertionError"
    assert alert["message"] == (
        "AssertionError: Label class 7 exceeds nc=3 in /home/user/exp/y7data_bad.yaml. Possible class labels are 0-2"
    )
    assert alert["lines"][0] == "Traceback (most recent call last):"  # all 7 lines of it fit in 10
    assert alert["lines"][-2] == "           ^^^^^^^^"


def test_a_traceback_that_training_went_past_is_not_final() -> None:
    crash = sample("telemetry/err_torch_miopenStatusUnknownError_conv2d_rocm5.7.txt")
    later = "\r        2/3         0G      1.072     0.9482     0.6509         10         64: 25% ━━━───────── 1/4\n"
    assert alerts.log_alerts(crash + later) == []


def test_ultralytics_corrupt_labels_are_counted() -> None:
    (alert,) = alerts.log_alerts(sample("ultralytics/bad_label_pipe.log"))
    assert (alert["kind"], alert["count"]) == ("corrupt_labels", 2)
    assert alert["message"] == (
        "2 images ignored for corrupt labels, first: Label class 7 exceeds dataset class count 3. "
        "Possible class labels are 0-2"
    )


def test_torch_without_kernels_for_the_gpu() -> None:
    (alert,) = alerts.log_alerts(sample("telemetry/err_torch_sm120-not-compatible_rtx5090_windows.txt"))
    assert (alert["kind"], alert["arch"]) == ("gpu_unsupported", "sm_120")
    assert alert["supported"] == ["sm_50", "sm_60", "sm_61", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]
    assert alert["message"].startswith("NVIDIA GeForce RTX 5090 with CUDA capability sm_120 is not compatible")


@pytest.mark.parametrize(
    "name",
    [
        "ultralytics/train_tty.log",
        "ultralytics/train_pipe.log",
        "yolov7/train_tty.log",
        "yolov7/train_pipe.log",
        "yolov7/noota_tty.log",
        "telemetry/err_nvidia-smi_no-driver.txt",
    ],
)
def test_healthy_runs_raise_nothing(name: str) -> None:
    text = sample(name)
    assert alerts.log_alerts(text, progress.parse_log_tail(text)["losses"]) == []


def test_a_hot_junction_on_the_legacy_rocm_reading() -> None:
    # Fan 45 %, 222 W, edge 77 °C, memory 79 °C, junction 103 °C: only the junction is over its limit.
    reading = gpus.parse_rocm_smi_json(sample("telemetry/rocm-smi_json_compact_-f-t-P_legacy-2019.json"))
    (alert,) = alerts.gpu_too_hot(reading["gpus"])
    assert alert == {
        "kind": "gpu_hot",
        "gpu": 0,
        "sensor": "temp_junction_c",
        "value_c": 103.0,
        "limit_c": 100.0,
        "message": "GPU 0 junction sensor at 103 °C (limit 100 °C)",
    }


def test_temperature_limits_can_be_lowered_per_sensor() -> None:
    reading = gpus.parse_rocm_smi_json(sample("telemetry/rocm-smi_json_rx6700xt_rocm5.7.1_telegraf-fixture.json"))
    assert alerts.gpu_too_hot(reading["gpus"]) == []  # 45 / 47 / 46 °C
    assert [alert["sensor"] for alert in alerts.gpu_too_hot(reading["gpus"], {"temp_mem_c": 46})] == ["temp_mem_c"]


def test_a_gpu_without_readings_is_not_hot() -> None:
    assert alerts.gpu_too_hot([dict.fromkeys(gpus.GPU_KEYS)]) == []


def test_disk_almost_full() -> None:
    gib = 1024**3
    (alert,) = alerts.disk_almost_full(3 * gib, 100 * gib)
    assert alert["kind"] == "disk_full"
    assert alert["message"] == "disk almost full: 3.0 GiB free of 100.0 GiB (3.0%)"
    assert alerts.disk_almost_full(6 * gib, 100 * gib) == []
    assert alerts.disk_almost_full(6 * gib, 100 * gib, min_free_fraction=0.10)[0]["free_bytes"] == 6 * gib
    assert alerts.disk_almost_full(0, 0) == []


def test_the_disk_full_floor_is_capped_on_large_disks_and_a_full_disk_always_alerts() -> None:
    gib, mib = 1024**3, 1024**2
    assert alerts.disk_almost_full(50 * gib, 4096 * gib) == []  # 1.2% of 4 TiB free is still 50 GiB: no alarm
    (low,) = alerts.disk_almost_full(9 * gib, 4096 * gib)
    assert low["floor_bytes"] == alerts.DISK_FLOOR_CAP_BYTES
    (small,) = alerts.disk_almost_full(1 * mib, 64 * mib)  # a small disk reads in MiB, not "0.0 GiB"
    assert small["message"] == "disk almost full: 1.0 MiB free of 64.0 MiB (1.6%)"
    (full,) = alerts.disk_almost_full(0, 64 * mib, min_free_fraction=0.0)
    assert full["message"] == "disk full: nothing free of 64.0 MiB"


def test_random_text_raises_nothing() -> None:
    for text in [
        "",
        "\r\r\n",
        "Traceback (most recent call last):",
        "Traceback (most recent call last):\n  x\n",
        "\x1b[31m1/2 0G nan:\x1b[0m",
        " 1/2  0G  nan  inf  3  64: 5%",
    ]:
        alerts.log_alerts(text)
