"""Which GPUs a host has, and which one a job should use.

Standard library only, Python >= 3.7: copied to the host beside agent.py and imported there as `gpuident`.
identify() reads the outputs of the tools in tool_argvs() (None for a tool that is missing or failed) and
returns one dict per GPU with the keys in IDENTITY_KEYS; pick() chooses among them and says why in a line.
Looking at every GPU matters: a Ryzen iGPU also opens /dev/kfd, and stopping at the first AMD hint picks it
over an RTX 5090 on the same box. Nothing here raises on odd text: a sick driver must not take the agent down.
"""

import re

from . import gpus

IDENTITY_KEYS = ("vendor", "index", "name", "gfx", "compute_cap", "driver", "vram_mib", "integrated")

# compute_cap tells which CUDA builds run (12.0 = sm_120 needs cu128); drivers before ~510 reject the field
# and fail the whole query, which is why plain `nvidia-smi` is the fallback.
NVIDIA_QUERY_FIELDS = ("index", "name", "compute_cap", "driver_version", "memory.total")

# APUs share system memory: a small carve-out, slow, and often unsupported by ROCm builds. They are known by
# their gfx target where rocminfo names it.
APU_GFX = frozenset(
    ["gfx902", "gfx909", "gfx90c", "gfx1035", "gfx1036", "gfx1037", "gfx1103", "gfx1150", "gfx1151", "gfx1152"]
)
# rocm-smi's concise table names no gfx target, only the PCI device id (DID): without rocminfo, that id is all
# there is to tell a Ryzen iGPU from a card.
APU_DEVICE_IDS = {
    "0x15dd": "Raven",
    "0x15d8": "Picasso",
    "0x1636": "Renoir",
    "0x1638": "Cezanne",
    "0x164c": "Lucienne",
    "0x1681": "Rembrandt",
    "0x164e": "Raphael",
    "0x1506": "Mendocino",
    "0x15bf": "Phoenix",
    "0x15c8": "Phoenix",
    "0x150e": "Strix",
}
GFX_TARGET = re.compile(r"^gfx[0-9a-f]+$")
ROCMINFO_AGENT = re.compile(r"\n\*{3,}\s*\nAgent \d+\s*\n\*{3,}\s*\n")  # the separator gpus.parse_rocminfo splits at
ROCMINFO_GPU = re.compile(r"^  Device Type:\s*GPU\s*$", re.MULTILINE)
# The GPU's own memory; its fine-grained and GROUP pools are host-visible or per-workgroup, not VRAM.
COARSE_POOL_KB = re.compile(r"Segment:\s*GLOBAL;\s*FLAGS:\s*COARSE GRAINED\s*\n\s*Size:\s*(\d+)")
CONCISE_DEVICE_ID = re.compile(r"^(\d+)\s.*?\b(0x[0-9a-fA-F]{4}),")  # ROCm 6's `IDs (DID, GUID)` column
SHORT_NAME_PREFIXES = ("NVIDIA GeForce ", "NVIDIA ", "AMD Radeon ")


def tool_argvs():
    """What the agent runs, keyed as identify() takes the outputs."""
    return {
        "nvidia-smi-query": [
            "nvidia-smi",
            "--query-gpu=" + ",".join(NVIDIA_QUERY_FIELDS),
            "--format=csv,noheader,nounits",
        ],
        "nvidia-smi": ["nvidia-smi"],
        "rocminfo": ["rocminfo"],
        # --showid adds the device id, the only sign of an iGPU when rocminfo is missing.
        "rocm-smi": ["rocm-smi", "--showid", "--showproductname", "--showmeminfo", "vram", "--json"],
    }


def identify(outputs):
    """Every GPU the outputs show: NVIDIA ones first, then AMD ones, each in the tools' own order."""
    return _nvidia(outputs.get("nvidia-smi-query"), outputs.get("nvidia-smi")) + _amd(
        outputs.get("rocminfo"), outputs.get("rocm-smi")
    )


def pick(found):
    """(the GPU a job should use, why) or (None, "no GPU"): discrete before integrated, then the most VRAM
    (unknown below any known), then the lowest index."""
    if not found:
        return None, "no GPU"
    ranked = sorted(found, key=_rank)
    chosen = ranked[0]
    passed_over = ", ".join(_label(gpu) for gpu in ranked[1:] if gpu["integrated"])
    reason = "%s (%s): %s" % (_short_name(chosen), _vram_text(chosen), _why(chosen, ranked))
    return chosen, reason + ("; integrated %s passed over" % passed_over if passed_over else "")


def _nvidia(query, table):
    found = _nvidia_from_query(query)
    return found if found else _nvidia_from_table(table)


def _nvidia_from_query(text):
    """The query's rows; a header (a query run without `noheader`) names the columns instead."""
    if gpus.tool_failure(text):
        return []
    lines = [line for line in (text or "").splitlines() if line.strip()]
    names = list(NVIDIA_QUERY_FIELDS)
    if lines and gpus._is_csv_header(lines[0]):
        names = [gpus.UNIT.sub("", cell).strip() for cell in lines.pop(0).split(",")]
    found = []
    for line in lines:
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) == len(names):
            found.append(_nvidia_identity(dict(zip(names, cells)), len(found)))
    return found


def _nvidia_identity(cells, position):
    index = gpus._integer(cells.get("index"), position)
    return _identity(
        "nvidia",
        index,
        gpus._text(cells.get("name")) or "NVIDIA GPU %d" % index,
        compute_cap=gpus._text(cells.get("compute_cap")),
        driver=gpus._text(cells.get("driver_version")),
        vram_mib=gpus._integer(cells.get("memory.total")),
    )


def _nvidia_from_table(text):
    driver = gpus.nvidia_smi_versions(text)["driver"]
    return [
        _identity("nvidia", gpu["index"], gpu["name"], driver=driver, vram_mib=gpus._integer(gpu["vram_total_mib"]))
        for gpu in gpus.parse_nvidia_smi_table(text)["gpus"]
    ]


def _amd(rocminfo, rocm_smi):
    """rocminfo's GPU agents and rocm-smi's devices are the same GPUs, in the same order: paired by position."""
    agents = _rocminfo_agents(rocminfo)
    devices = _rocm_smi_devices(rocm_smi)
    found = []
    for position in range(max(len(agents), len(devices))):
        agent = agents[position] if position < len(agents) else {}
        device = devices[position] if position < len(devices) else {}
        found.append(_amd_identity(agent, device, position))
    return found


def _rocminfo_agents(text):
    agents = gpus.parse_rocminfo(text)
    pools = _rocminfo_vram_kb(text)
    for agent, vram_kb in zip(agents, pools if len(pools) == len(agents) else [None] * len(agents)):
        agent["vram_mib"] = vram_kb // 1024 if vram_kb is not None else None
    return agents


def _rocminfo_vram_kb(text):
    """Per GPU agent, in order, the size of its coarse-grained global pool (KB), or None."""
    sizes = []
    for block in ROCMINFO_AGENT.split(text or "")[1:]:
        if ROCMINFO_GPU.search(block):
            pool = COARSE_POOL_KB.search(block)
            sizes.append(int(pool.group(1)) if pool else None)
    return sizes


def _rocm_smi_devices(text):
    """[{index, name, vram_mib, device_id, gfx, driver}] from rocm-smi's JSON or its concise table."""
    document = gpus._json_in(text, "{")
    if isinstance(document, dict):
        return _rocm_smi_json_devices(text, document)
    device_ids = dict(match.groups() for match in map(CONCISE_DEVICE_ID.match, (text or "").splitlines()) if match)
    return [
        {"index": gpu["index"], "device_id": device_ids.get(str(gpu["index"]))}
        for gpu in sorted(gpus.parse_rocm_smi_concise(text)["gpus"], key=lambda gpu: gpu["index"] or 0)
    ]


def _rocm_smi_json_devices(text, document):
    system = document.get("system") if isinstance(document.get("system"), dict) else {}
    driver = gpus._text(_lowered(system).get("driver version"))
    devices = []
    for gpu in gpus.parse_rocm_smi_json(text)["gpus"]:
        values = _lowered(document.get("card%d" % gpu["index"]))
        gfx = gpus._text(values.get("gfx version"))
        devices.append(
            {
                "index": gpu["index"],
                "name": gpu["name"],
                "vram_mib": gpus._integer(gpu["vram_total_mib"]),
                "device_id": gpus._text(values.get("device id") or values.get("gpu id")),
                "gfx": gfx if gfx and GFX_TARGET.match(gfx) else None,
                "driver": driver,
            }
        )
    return devices


def _amd_identity(agent, device, position):
    gfx = agent.get("gfx") or device.get("gfx")
    gfx = gfx if gfx and GFX_TARGET.match(gfx) else None
    device_id = (agent.get("chip_id") or device.get("device_id") or "").lower() or None
    index = device.get("index")
    vram_mib = device.get("vram_mib") or agent.get("vram_mib")  # rocm-smi counts bytes; rocminfo rounds to KB
    return _identity(
        "amd",
        index if index is not None else position,
        _amd_name(agent, device, gfx, device_id),
        gfx=gfx,
        driver=device.get("driver"),
        vram_mib=vram_mib,
        integrated=gfx in APU_GFX or device_id in APU_DEVICE_IDS,
    )


def _amd_name(agent, device, gfx, device_id):
    """rocminfo's Marketing Name is the product's; rocm-smi's card series is often a chip family."""
    if agent.get("name") or device.get("name"):
        return agent.get("name") or device.get("name")
    if device_id in APU_DEVICE_IDS:
        return "AMD Radeon Graphics (%s)" % APU_DEVICE_IDS[device_id]  # what AMD calls a Ryzen's iGPU
    return ("AMD GPU %s" % (gfx or device_id or "")).strip()


def _identity(vendor, index, name, gfx=None, compute_cap=None, driver=None, vram_mib=None, integrated=False):
    return {
        "vendor": vendor,
        "index": index,
        "name": name,
        "gfx": gfx,
        "compute_cap": compute_cap,
        "driver": driver,
        "vram_mib": vram_mib,
        "integrated": bool(integrated),
    }


def _lowered(values):
    """rocm-smi's keys change case and trailing colons between releases."""
    if not isinstance(values, dict):
        return {}
    return {str(key).strip().rstrip(":").strip().lower(): value for key, value in values.items()}


def _rank(gpu):
    vram, index = gpu["vram_mib"], gpu["index"]
    return (gpu["integrated"], vram is None, -(vram or 0), index is None, index or 0)


def _why(chosen, ranked):
    if len(ranked) == 1:
        return "the only GPU" + (", integrated" if chosen["integrated"] else "")
    if chosen["integrated"]:
        return "no discrete GPU among %d" % len(ranked)
    discrete = [gpu for gpu in ranked if not gpu["integrated"]]
    if len(discrete) == 1:
        return "the only discrete GPU of %d" % len(ranked)
    if chosen["vram_mib"] is None:
        return "no GPU says its VRAM; lowest index of %d" % len(ranked)
    if discrete[1]["vram_mib"] == chosen["vram_mib"]:
        return "most VRAM of %d GPUs, lowest index among equals" % len(ranked)
    return "most VRAM of %d GPUs" % len(ranked)


def _label(gpu):
    return "AMD %s" % gpu["gfx"] if gpu["gfx"] else _short_name(gpu)


def _short_name(gpu):
    """ "NVIDIA GeForce RTX 5090" reads as "RTX 5090"; "AMD Radeon Graphics" keeps its maker."""
    name = gpu["name"] or "GPU %s" % gpu["index"]
    for prefix in SHORT_NAME_PREFIXES:
        rest = name[len(prefix) :]
        if name.startswith(prefix) and re.search(r"\d", rest):
            return rest
    return name


def _vram_text(gpu):
    return "%d MiB" % gpu["vram_mib"] if gpu["vram_mib"] is not None else "VRAM unknown"
