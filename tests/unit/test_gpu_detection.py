"""gpuident: which GPUs a host has and which one a job gets, on tool outputs as their users posted them
(samples/telemetry), and the agent's `facts` running real (stand-in) tools."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest
from rich.console import Console

from runner.cli import render
from runner.hostside import agent, gpuident

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "samples" / "telemetry"
RX5600_ROCMINFO = "rocminfo_rx5600xt_gfx1010_rocm5.1.3.txt"
RTX5090_TABLE = "nvidia-smi_table_rtx5090_drv580_single_with-processes.txt"
RX6800M_IGPU_CONCISE = "rocm-smi_concise_rx6800m-gfx1031+igpu-gfx90c_rocm-smi6.3.1.txt"
RX6700XT_JSON = "rocm-smi_json_rx6700xt_rocm5.7.1_telegraf-fixture.json"
TWO_GPU_CSV = "nvidia-smi_query-gpu_csv-header_2gpu_gtx1080ti-gtx1060.csv"
NO_TOOLS = {"nvidia-smi-query": None, "nvidia-smi": None, "rocminfo": None, "rocm-smi": None}


def sample(name: str) -> str:
    return (SAMPLES / name).read_bytes().decode("utf-8", "replace")


def identity(**values) -> dict:
    blank = {"gfx": None, "compute_cap": None, "driver": None, "vram_mib": None, "integrated": False}
    return blank | values


def test_the_argv_the_agent_runs() -> None:
    assert gpuident.tool_argvs() == {
        "nvidia-smi-query": [
            "nvidia-smi",
            "--query-gpu=index,name,compute_cap,driver_version,memory.total",
            "--format=csv,noheader,nounits",
        ],
        "nvidia-smi": ["nvidia-smi"],
        "rocminfo": ["rocminfo"],
        "rocm-smi": ["rocm-smi", "--showid", "--showproductname", "--showmeminfo", "vram", "--json"],
    }


def test_rx5600xt_from_rocminfo() -> None:
    found = gpuident.identify(NO_TOOLS | {"rocminfo": sample(RX5600_ROCMINFO)})
    # The Ryzen 5 3600X is agent 1, a CPU; the card's VRAM is its coarse-grained pool, 6275072 KB.
    assert found == [identity(vendor="amd", index=0, name="AMD Radeon RX 5600 XT", gfx="gfx1010", vram_mib=6128)]
    assert gpuident.pick(found) == (found[0], "RX 5600 XT (6128 MiB): the only GPU")


def test_rtx5090_from_the_plain_table_when_the_query_failed() -> None:
    found = gpuident.identify(NO_TOOLS | {"nvidia-smi": sample(RTX5090_TABLE)})
    assert found == [
        identity(vendor="nvidia", index=0, name="NVIDIA GeForce RTX 5090", driver="580.126.09", vram_mib=32607)
    ]  # the table shows no compute capability
    assert gpuident.pick(found)[1] == "RTX 5090 (32607 MiB): the only GPU"


def test_the_query_is_read_before_the_table() -> None:
    query = "0, NVIDIA GeForce RTX 5090, 12.0, 580.126.09, 32607\n"
    found = gpuident.identify(NO_TOOLS | {"nvidia-smi-query": query, "nvidia-smi": sample(RTX5090_TABLE)})
    assert found == [
        identity(
            vendor="nvidia",
            index=0,
            name="NVIDIA GeForce RTX 5090",
            compute_cap="12.0",
            driver="580.126.09",
            vram_mib=32607,
        )
    ]


def test_rx6800m_and_the_cezanne_igpu_from_the_concise_table() -> None:
    found = gpuident.identify(NO_TOOLS | {"rocm-smi": sample(RX6800M_IGPU_CONCISE)})
    # The table gives only device ids: 0x73df (Navi 22) names no product, 0x1638 is a Cezanne APU.
    assert found == [
        identity(vendor="amd", index=0, name="AMD GPU 0x73df"),
        identity(vendor="amd", index=1, name="AMD Radeon Graphics (Cezanne)", integrated=True),
    ]
    picked, reason = gpuident.pick(found)
    assert picked["index"] == 0
    assert reason == (
        "AMD GPU 0x73df (VRAM unknown): the only discrete GPU of 2; "
        "integrated AMD Radeon Graphics (Cezanne) passed over"
    )


def test_an_rtx_beats_a_ryzen_igpu_on_a_mixed_box() -> None:
    mixed = {"nvidia-smi": sample(RTX5090_TABLE), "rocm-smi": sample(RX6800M_IGPU_CONCISE)}
    found = gpuident.identify(NO_TOOLS | mixed)
    assert [(gpu["vendor"], gpu["integrated"]) for gpu in found] == [("nvidia", False), ("amd", False), ("amd", True)]
    picked, reason = gpuident.pick(found)
    assert picked["name"] == "NVIDIA GeForce RTX 5090"
    assert reason == "RTX 5090 (32607 MiB): most VRAM of 3 GPUs; integrated AMD Radeon Graphics (Cezanne) passed over"


def test_a_query_with_a_header_is_read_by_its_column_names() -> None:
    # A different query (no index, compute_cap or driver; units on), yet its header names the columns:
    # identify reads it rather than dropping two GPUs.
    found = gpuident.identify(NO_TOOLS | {"nvidia-smi-query": sample(TWO_GPU_CSV)})
    assert found == [
        identity(vendor="nvidia", index=0, name="GeForce GTX 1080 Ti", vram_mib=11175),
        identity(vendor="nvidia", index=1, name="GeForce GTX 1060 6GB", vram_mib=6078),
    ]
    assert gpuident.pick(found) == (found[0], "GeForce GTX 1080 Ti (11175 MiB): most VRAM of 2 GPUs")


def test_the_same_two_gpus_in_the_agent_s_query_format() -> None:
    # The sample's values as the agent's own query (noheader, nounits) prints them; its driver is not shown.
    query = "0, GeForce GTX 1080 Ti, 6.1, [N/A], 11175\n1, GeForce GTX 1060 6GB, 6.1, [N/A], 6078\n"
    found = gpuident.identify(NO_TOOLS | {"nvidia-smi-query": query})
    assert [(gpu["index"], gpu["compute_cap"], gpu["driver"], gpu["vram_mib"]) for gpu in found] == [
        (0, "6.1", None, 11175),
        (1, "6.1", None, 6078),
    ]


def test_rocm_smi_json_names_the_card_and_its_vram() -> None:
    found = gpuident.identify(NO_TOOLS | {"rocm-smi": sample(RX6700XT_JSON)})
    assert found == [
        identity(vendor="amd", index=0, name="Navi 22 [Radeon RX 6700/6700 XT / 6800M]", driver="6.3.6", vram_mib=12272)
    ]  # 12868124672 B


def test_rocminfo_and_rocm_smi_are_one_gpu() -> None:
    found = gpuident.identify(NO_TOOLS | {"rocminfo": sample(RX5600_ROCMINFO), "rocm-smi": sample(RX6700XT_JSON)})
    assert len(found) == 1
    assert (found[0]["name"], found[0]["gfx"], found[0]["driver"]) == ("AMD Radeon RX 5600 XT", "gfx1010", "6.3.6")


def test_an_apu_is_known_by_its_gfx_target() -> None:
    text = sample(RX5600_ROCMINFO).replace("gfx1010", "gfx90c").replace("AMD Radeon RX 5600 XT", "AMD Radeon Graphics")
    assert gpuident.identify(NO_TOOLS | {"rocminfo": text})[0]["integrated"] is True


def test_equal_vram_goes_to_the_lowest_index() -> None:
    twins = [identity(vendor="nvidia", index=index, name="NVIDIA GeForce RTX 3090", vram_mib=24576) for index in (1, 0)]
    picked, reason = gpuident.pick(twins)
    assert picked["index"] == 0
    assert reason == "RTX 3090 (24576 MiB): most VRAM of 2 GPUs, lowest index among equals"


def test_only_an_igpu_is_still_picked() -> None:
    igpu = identity(vendor="amd", index=0, name="AMD Radeon Graphics", gfx="gfx1103", vram_mib=512, integrated=True)
    assert gpuident.pick([igpu]) == (igpu, "AMD Radeon Graphics (512 MiB): the only GPU, integrated")


def test_no_tools_no_gpu() -> None:
    assert gpuident.identify(NO_TOOLS) == [] and gpuident.identify({}) == []
    assert gpuident.pick([]) == (None, "no GPU")


@pytest.mark.parametrize("name", ["err_nvidia-smi_no-driver.txt", "err_nvidia-smi_nvml-driver-library-mismatch.txt"])
def test_a_broken_driver_shows_no_gpu(name: str) -> None:
    assert gpuident.identify({"nvidia-smi-query": sample(name), "nvidia-smi": sample(name)}) == []


@pytest.mark.parametrize("tool", sorted(NO_TOOLS))
@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        "null",
        "[1]",
        '{"card0": 5, "system": 3}',
        "\x00\xff,,,,\n|  |\n",
        "0, x, y, z, w\n",
        "\n*******\nAgent 1\n*******\n  Device Type: GPU\n",
    ],
)
def test_odd_text_never_raises(tool: str, text: str) -> None:
    gpuident.pick(gpuident.identify({tool: text}))


@pytest.mark.parametrize("name", sorted(path.name for path in SAMPLES.iterdir()))
def test_every_sample_cut_anywhere_never_raises(name: str) -> None:
    text = sample(name)
    for end in range(0, len(text), max(1, len(text) // 40)):
        for tool in NO_TOOLS:
            gpuident.pick(gpuident.identify({tool: text[:end]}))


def facts_screen(facts: dict) -> str:
    console = Console(width=200, record=True)
    console.print(render.facts_table(facts))
    return console.export_text()


HOST = {
    "host": "box",
    "kind": "ssh",
    "connect_seconds": 0.1,
    "os": "Debian",
    "python": "3.11.2",
    "tmux": "tmux 3.3a",
    "docker": None,
    "disk_free_bytes": 10 << 30,
    "runner_dir": "/home/u/.runner",
}


def test_hosts_check_lists_each_gpu_and_the_pick() -> None:
    found = gpuident.identify(
        NO_TOOLS
        | {
            "nvidia-smi-query": "0, NVIDIA GeForce RTX 5090, 12.0, 580.126.09, 32607\n",
            "rocm-smi": sample(RX6800M_IGPU_CONCISE),
        }
    )
    chosen, reason = gpuident.pick(found)
    screen = facts_screen(
        HOST | {"gpus": found, "gpu_pick": {"index": 0, "vendor": "nvidia", "name": chosen["name"], "reason": reason}}
    )
    lines = [line.rstrip() for line in screen.splitlines()]
    start = next(number for number, line in enumerate(lines) if line.startswith("gpus"))
    column = lines[start].index("0: ")
    assert [line[column:] for line in lines[start : start + 4]] == [
        "0: NVIDIA GeForce RTX 5090, compute 12.0, 32607 MiB",
        "0: AMD GPU 0x73df, VRAM unknown",
        "1: AMD Radeon Graphics (Cezanne), VRAM unknown, integrated",
        reason,
    ]
    assert lines[start + 3].startswith("picked")


def test_hosts_check_without_a_gpu() -> None:
    screen = facts_screen(HOST | {"gpus": [], "gpu_pick": None})
    assert "no GPU" in screen and "picked" not in screen


def stand_in(folder: Path, tool: str, outputs: dict[str, tuple[int, str]]) -> None:
    """An executable named tool that prints outputs[its arguments] and exits with that code."""
    script = folder / tool
    script.write_text(
        f"#!{sys.executable}\nimport sys\nout = {outputs!r}.get(' '.join(sys.argv[1:]), (2, ''))\n"
        "sys.stdout.write(out[1])\nsys.exit(out[0])\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def test_facts_on_a_machine_without_gpu_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # none of the tools, whatever this machine has
    facts = agent.facts(str(tmp_path))
    assert facts["gpus"] == [] and facts["gpu_pick"] is None
    assert json.loads(json.dumps(facts)) == facts  # what `hosts check --json` carries


def test_facts_falls_back_to_the_table_on_an_old_driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    query = " ".join(gpuident.tool_argvs()["nvidia-smi-query"][1:])
    stand_in(
        bin_folder,
        "nvidia-smi",
        {query: (6, 'Field "compute_cap" is not a valid field to query.\n'), "": (0, sample(RTX5090_TABLE))},
    )
    rocm_smi = " ".join(gpuident.tool_argvs()["rocm-smi"][1:])
    stand_in(bin_folder, "rocm-smi", {rocm_smi: (0, sample(RX6800M_IGPU_CONCISE))})
    monkeypatch.setenv("PATH", str(bin_folder))  # the stand-ins only: their shebang names the interpreter
    facts = agent.facts(str(tmp_path))
    assert [gpu["name"] for gpu in facts["gpus"]] == [
        "NVIDIA GeForce RTX 5090",
        "AMD GPU 0x73df",
        "AMD Radeon Graphics (Cezanne)",
    ]
    assert facts["gpu_pick"] == {
        "index": 0,
        "vendor": "nvidia",
        "name": "NVIDIA GeForce RTX 5090",
        "reason": "RTX 5090 (32607 MiB): most VRAM of 3 GPUs; integrated AMD Radeon Graphics (Cezanne) passed over",
    }
