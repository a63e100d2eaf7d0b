"""gpus.py against nvidia-smi, rocm-smi and rocminfo output as their users posted it (samples/telemetry)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.hostside import gpus

# Byte-for-byte copies of shared/samples, so the suite runs from a plain clone.
SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "samples" / "telemetry"


def sample(name: str) -> str:
    return (SAMPLES / name).read_bytes().decode("utf-8", "replace")


def only_gpu(reading: dict) -> dict:
    assert reading["error"] is None
    assert len(reading["gpus"]) == 1
    return reading["gpus"][0]


def test_argv_the_agent_runs() -> None:
    assert gpus.nvidia_smi_argv() == [
        "nvidia-smi",
        "--query-gpu=index,name,utilization.gpu,memory.used,memory.total,temperature.gpu,temperature.memory,"
        "power.draw,fan.speed,clocks.current.sm,clocks.current.memory",
        "--format=csv,nounits",
    ]
    assert gpus.rocm_smi_argv()[0] == "rocm-smi" and gpus.rocm_smi_argv()[-1] == "--json"
    assert gpus.amd_smi_argv() == ["amd-smi", "metric", "--json"]


def test_two_gpus_with_header_and_units() -> None:
    reading = gpus.parse_nvidia_smi_csv(sample("nvidia-smi_query-gpu_csv-header_2gpu_gtx1080ti-gtx1060.csv"))
    first, second = reading["gpus"]
    assert first == {
        "index": 0,
        "name": "GeForce GTX 1080 Ti",
        "util_pct": 36.0,
        "vram_used_mib": 2856.0,
        "vram_total_mib": 11175.0,
        "temp_edge_c": 60.0,
        "temp_junction_c": None,
        "temp_mem_c": None,
        "power_w": 106.56,
        "fan_pct": 29.0,
        "clock_sm_mhz": 1936.0,
        "clock_mem_mhz": 5508.0,  # only the graphics clock was asked for
    }
    assert (second["index"], second["name"], second["vram_used_mib"], second["vram_total_mib"]) == (
        1,
        "GeForce GTX 1060 6GB",
        4.0,
        6078.0,
    )
    assert (second["temp_edge_c"], second["power_w"], second["clock_sm_mhz"]) == (49.0, 5.68, 139.0)


def test_every_field_of_a_new_driver_by_header_name() -> None:
    gpu = only_gpu(
        gpus.parse_nvidia_smi_csv(sample("nvidia-smi_query-gpu_csv-header_allfields_rtx4080super_drv595_load.csv"))
    )
    assert gpu == {
        "index": 0,
        "name": "NVIDIA GeForce RTX 4080 SUPER",
        "util_pct": 7.0,
        "vram_used_mib": 1474.0,
        "vram_total_mib": 16376.0,
        "temp_edge_c": 46.0,
        "temp_junction_c": None,
        "temp_mem_c": None,  # `N/A` on a GeForce card
        "power_w": 84.24,
        "fan_pct": 0.0,
        "clock_sm_mhz": 2805.0,
        "clock_mem_mhz": 11251.0,
    }


def test_no_header_no_units_by_the_query_s_own_field_list() -> None:
    # The query gpu-utils sent in Ricks-Lab/gpu-utils#83, in its order.
    fields = [
        "power.limit",
        "power.min_limit",
        "power.max_limit",
        "memory.total",
        "vbios_version",
        "driver_version",
        "name",
        "gpu_uuid",
        "power.draw",
        "temperature.gpu",
        "temperature.memory",
        "clocks.current.graphics",
        "clocks.sm",
        "clocks.mem",
        "utilization.gpu",
        "utilization.memory",
        "fan.speed",
        "pcie.link.width.current",
        "pstate",
    ]
    gpu = only_gpu(
        gpus.parse_nvidia_smi_csv(sample("nvidia-smi_query-gpu_csv-noheader-nounits_rtx2080_drv440.csv"), fields)
    )
    assert (gpu["name"], gpu["vram_total_mib"], gpu["vram_used_mib"]) == ("GeForce RTX 2080", 7979.0, None)
    assert (gpu["power_w"], gpu["temp_edge_c"], gpu["temp_mem_c"]) == (176.98, 45.0, None)
    assert (gpu["clock_sm_mhz"], gpu["clock_mem_mhz"], gpu["util_pct"], gpu["fan_pct"]) == (1965.0, 7199.0, 86.0, 100.0)


def test_a_fan_that_reads_na() -> None:
    # i3pystatus' query:
    # memory.total,memory.free,memory.used,temperature.gpu,fan.speed,utilization.gpu,utilization.memory
    fields = (
        "memory.total",
        "memory.free",
        "memory.used",
        "temperature.gpu",
        "fan.speed",
        "utilization.gpu",
        "utilization.memory",
    )
    gpu = only_gpu(gpus.parse_nvidia_smi_csv(sample("nvidia-smi_query-gpu_csv-noheader-nounits_NA-fan.csv"), fields))
    assert (gpu["vram_total_mib"], gpu["vram_used_mib"], gpu["temp_edge_c"], gpu["fan_pct"], gpu["util_pct"]) == (
        2004.0,
        0.0,
        44.0,
        None,
        0.0,
    )


def test_unknown_error_value_and_blank_line() -> None:
    gpu = only_gpu(gpus.parse_nvidia_smi_csv(sample("nvidia-smi_query-gpu_csv-nounits_rtx2080ti_unknown-error.csv")))
    assert (gpu["name"], gpu["util_pct"], gpu["temp_edge_c"], gpu["power_w"], gpu["fan_pct"]) == (
        "GeForce RTX 2080 Ti",
        100.0,
        56.0,
        228.82,
        56.0,
    )
    assert (gpu["clock_sm_mhz"], gpu["clock_mem_mhz"]) == (1560.0, 6800.0)


def test_na_values_become_none() -> None:
    text = (
        "index, name, power.draw [W], fan.speed [%]\n"
        "0, Tesla T4, [N/A], [Unknown Error]\n1, Tesla T4, N/A, [Not Supported]\n"
    )
    reading = gpus.parse_nvidia_smi_csv(text)
    assert [(gpu["power_w"], gpu["fan_pct"]) for gpu in reading["gpus"]] == [(None, None), (None, None)]


@pytest.mark.parametrize(
    ("name", "expected", "versions"),
    [
        (
            "nvidia-smi_table_rtx5090_drv580_single_with-processes.txt",
            ("NVIDIA GeForce RTX 5090", 0.0, 41.0, 30.0, 1250.0, 32607.0, 3.0),
            {"driver": "580.126.09", "cuda": "13.0"},
        ),
        # Driver 610 renamed the banner: KMD Version / CUDA UMD Version.
        (
            "nvidia-smi_table_rtx2080super_drv610_kmd-umd-header.txt",
            ("NVIDIA GeForce RTX 2080 ...", 38.0, 33.0, 38.0, 211.0, 8192.0, 0.0),
            {"driver": "610.57.04", "cuda": "13.3"},
        ),
    ],
)
def test_plain_nvidia_smi_table(name: str, expected: tuple, versions: dict) -> None:
    text = sample(name)
    gpu = only_gpu(gpus.parse_nvidia_smi_table(text))
    assert gpu["index"] == 0
    assert (
        gpu["name"],
        gpu["fan_pct"],
        gpu["temp_edge_c"],
        gpu["power_w"],
        gpu["vram_used_mib"],
        gpu["vram_total_mib"],
        gpu["util_pct"],
    ) == expected
    assert gpus.nvidia_smi_versions(text) == versions


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (
            "err_nvidia-smi_no-driver.txt",
            "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
            "Make sure that the latest NVIDIA driver is installed and running.",
        ),
        (
            "err_nvidia-smi_nvml-driver-library-mismatch.txt",
            "Failed to initialize NVML: Driver/library version mismatch; NVML library version: 550.144",
        ),
    ],
)
def test_a_broken_driver_is_a_failed_tool_not_a_crash(name: str, reason: str) -> None:
    text = sample(name)
    expected = "tool present but failed: " + reason
    assert gpus.tool_failure(text) == expected
    for reader in (gpus.parse_nvidia_smi_csv, gpus.parse_nvidia_smi_table):
        assert reader(text) == {"tool": "nvidia-smi", "gpus": [], "error": expected}


def test_healthy_output_is_no_failure() -> None:
    assert gpus.tool_failure(sample("nvidia-smi_query-gpu_csv-header_2gpu_gtx1080ti-gtx1060.csv")) is None
    assert gpus.parse_nvidia_smi_csv("")["error"] == "tool present but failed: it printed nothing"


def test_rocm_smi_json_rocm5() -> None:
    gpu = only_gpu(gpus.parse_rocm_smi_json(sample("rocm-smi_json_rx6700xt_rocm5.7.1_telegraf-fixture.json")))
    assert (gpu["index"], gpu["name"]) == (0, "Navi 22 [Radeon RX 6700/6700 XT / 6800M]")
    assert (gpu["temp_edge_c"], gpu["temp_junction_c"], gpu["temp_mem_c"]) == (45.0, 47.0, 46.0)
    assert gpu["vram_total_mib"] == 12272.0  # 12868124672 B
    assert gpu["vram_used_mib"] == pytest.approx(1492.02, abs=0.01)  # 1564491776 B
    assert (gpu["util_pct"], gpu["power_w"], gpu["clock_sm_mhz"], gpu["clock_mem_mhz"]) == (0.0, 6.0, 500.0, 96.0)
    assert gpu["fan_pct"] is None  # the fixture has no fan key at all


def test_rocm_smi_json_legacy_compact() -> None:
    gpu = only_gpu(gpus.parse_rocm_smi_json(sample("rocm-smi_json_compact_-f-t-P_legacy-2019.json")))
    assert (gpu["temp_edge_c"], gpu["temp_junction_c"], gpu["temp_mem_c"]) == (77.0, 103.0, 79.0)
    assert (gpu["power_w"], gpu["fan_pct"], gpu["name"], gpu["vram_total_mib"]) == (222.0, 45.0, None, None)


def test_rocm_smi_json_after_a_warning_line() -> None:
    text = "WARNING: AMD GPU device(s) is/are in a low-power state. Check power control/runtime_status\n\n" + sample(
        "rocm-smi_json_compact_-f-t-P_legacy-2019.json"
    )
    assert only_gpu(gpus.parse_rocm_smi_json(text))["temp_junction_c"] == 103.0


def test_rocm_smi_concise_table_of_rocm_6() -> None:
    # It printed `Exception caught: map::at` above the table, and still the table.
    reading = gpus.parse_rocm_smi_concise(sample("rocm-smi_concise_rx6800m-gfx1031+igpu-gfx90c_rocm-smi6.3.1.txt"))
    dgpu, igpu = reading["gpus"]
    assert (dgpu["index"], dgpu["temp_edge_c"], dgpu["power_w"], dgpu["clock_sm_mhz"], dgpu["clock_mem_mhz"]) == (
        0,
        46.0,
        7.0,
        0.0,
        96.0,
    )
    assert (dgpu["fan_pct"], dgpu["util_pct"]) == (0.0, 0.0)
    assert (igpu["index"], igpu["temp_edge_c"], igpu["power_w"], igpu["clock_sm_mhz"], igpu["clock_mem_mhz"]) == (
        1,
        54.0,
        29.0,
        None,
        1600.0,
    )  # SCLK `None`
    assert igpu["util_pct"] == 1.0


def test_rocminfo_gpu_agents() -> None:
    assert gpus.parse_rocminfo(sample("rocminfo_rx5600xt_gfx1010_rocm5.1.3.txt")) == [
        {"gfx": "gfx1010", "name": "AMD Radeon RX 5600 XT", "compute_units": 36, "chip_id": "0x731f"}
    ]


# No recorded amd-smi output exists in samples/: this fixture is written by hand from the documented
# `amd-smi metric --json` shape (ROCm 6.x: readings as {"value", "unit"} objects or "N/A", clocks under
# gfx_0/mem_0, fan usage in %), for an RX 7900 XTX-like card.
AMD_SMI_GPU = {
    "gpu": 0,
    "usage": {
        "gfx_activity": {"value": 97, "unit": "%"},
        "umc_activity": {"value": 40, "unit": "%"},
        "mm_activity": "N/A",
    },
    "power": {"socket_power": {"value": 301, "unit": "W"}, "gfx_voltage": "N/A", "power_management": "ENABLED"},
    "clock": {
        "gfx_0": {"clk": {"value": 2480, "unit": "MHz"}, "min_clk": {"value": 500, "unit": "MHz"}},
        "mem_0": {"clk": {"value": 1249, "unit": "MHz"}},
    },
    "temperature": {
        "edge": {"value": 71, "unit": "C"},
        "hotspot": {"value": 89, "unit": "C"},
        "mem": {"value": 80, "unit": "C"},
    },
    "fan": {"speed": 140, "max": 255, "rpm": 1650, "usage": {"value": 55, "unit": "%"}},
    "mem_usage": {"total_vram": {"value": 24560, "unit": "MB"}, "used_vram": {"value": 20180, "unit": "MB"}},
}
AMD_SMI_EXPECTED = {
    "index": 0,
    "name": None,
    "util_pct": 97.0,
    "vram_used_mib": 20180.0,
    "vram_total_mib": 24560.0,
    "temp_edge_c": 71.0,
    "temp_junction_c": 89.0,
    "temp_mem_c": 80.0,
    "power_w": 301.0,
    "fan_pct": 55.0,
    "clock_sm_mhz": 2480.0,
    "clock_mem_mhz": 1249.0,
}


@pytest.mark.parametrize("top_level", ["list", "gpu_data"], ids=["rocm-6.0-list", "later-gpu_data"])
def test_amd_smi_both_top_levels(top_level: str) -> None:
    document = [AMD_SMI_GPU] if top_level == "list" else {"gpu_data": [AMD_SMI_GPU]}
    assert only_gpu(gpus.parse_amd_smi_json(json.dumps(document, indent=4))) == AMD_SMI_EXPECTED


def test_amd_smi_after_a_warning_that_looks_like_json() -> None:
    text = "[WARNING] Could not read some metrics\n" + json.dumps([AMD_SMI_GPU]) + "\nAMDSMI done\n"
    assert only_gpu(gpus.parse_amd_smi_json(text)) == AMD_SMI_EXPECTED


def test_amd_smi_absent_sensors() -> None:
    sparse = {"gpu": 1, "usage": {"gfx_activity": "N/A"}, "temperature": "N/A", "fan": {"usage": "N/A"}}
    gpu = only_gpu(gpus.parse_amd_smi_json(json.dumps({"gpu_data": [sparse]})))
    assert gpu == dict.fromkeys(gpus.GPU_KEYS) | {"index": 1}


@pytest.mark.parametrize(
    "reader",
    [
        gpus.parse_nvidia_smi_csv,
        gpus.parse_nvidia_smi_table,
        gpus.parse_rocm_smi_json,
        gpus.parse_rocm_smi_concise,
        gpus.parse_amd_smi_json,
    ],
)
@pytest.mark.parametrize("text", ["", "{", "[1, 2", '{"card0": 5}', '[{"gpu": "x"}]', "\x00\xff,,,\n|  |\n", "null"])
def test_readers_never_raise(reader, text: str) -> None:
    reading = reader(text)
    assert set(reading) == {"tool", "gpus", "error"}
