"""GPU telemetry from nvidia-smi, rocm-smi and amd-smi output, and identities from rocminfo.

Standard library only, Python >= 3.7: copied to the host beside agent.py and imported there as `gpus`.
Every reader takes the tool's output text and returns {"tool", "gpus", "error"}: `gpus` holds one dict
per GPU with the keys in GPU_KEYS (None where the tool did not say), and `error` is None, or
"tool present but failed: <reason>" when the text is a failure message or holds no GPU at all.
Readers never raise on odd text: a sick driver must not take the agent down with it.
"""

import json
import re

GPU_KEYS = (
    "index",
    "name",
    "util_pct",
    "vram_used_mib",
    "vram_total_mib",
    "temp_edge_c",
    "temp_junction_c",
    "temp_mem_c",
    "power_w",
    "fan_pct",
    "clock_sm_mhz",
    "clock_mem_mhz",
)

# Fields that every driver since at least 440 accepts: one unknown field fails the whole query, so newer
# names (clocks_event_reasons.*, power.draw.instant) stay out. The header is kept (no `noheader`): the
# output then names its own columns and cannot be read in the wrong order.
NVIDIA_QUERY_FIELDS = (
    "index",
    "name",
    "utilization.gpu",
    "memory.used",
    "memory.total",
    "temperature.gpu",
    "temperature.memory",
    "power.draw",
    "fan.speed",
    "clocks.current.sm",
    "clocks.current.memory",
)
# temperature.gpu is the die sensor NVIDIA reports; it fills temp_edge_c (nvidia-smi has no junction reading).
NVIDIA_FIELD_KEYS = {
    "index": "index",
    "name": "name",
    "utilization.gpu": "util_pct",
    "memory.used": "vram_used_mib",
    "memory.total": "vram_total_mib",
    "temperature.gpu": "temp_edge_c",
    "temperature.memory": "temp_mem_c",
    "power.draw": "power_w",
    "fan.speed": "fan_pct",
    "clocks.current.sm": "clock_sm_mhz",
    "clocks.sm": "clock_sm_mhz",
    "clocks.current.memory": "clock_mem_mhz",
    "clocks.mem": "clock_mem_mhz",
}
# Read only where the preferred field was not queried (GeForce cards run the SM and graphics clocks together).
NVIDIA_FALLBACK_KEYS = {
    "clocks.current.graphics": "clock_sm_mhz",
    "clocks.gr": "clock_sm_mhz",
    "power.draw.average": "power_w",
    "power.draw.instant": "power_w",
}

# ROCm 5.x rocm-smi takes each --show flag with --json; `-a` would also run slow or failing probes (pcie
# bandwidth, firmware) on old cards, and its output changes more between releases.
ROCM_SMI_ARGV = (
    "rocm-smi",
    "--showuse",
    "--showmemuse",
    "--showmeminfo",
    "vram",
    "--showtemp",
    "--showpower",
    "--showfan",
    "--showclocks",
    "--showproductname",
    "--json",
)
AMD_SMI_ARGV = ("amd-smi", "metric", "--json")  # ROCm 6+; `static` would add names but costs another second

FAILURE = re.compile(
    r"NVIDIA-SMI has failed|Failed to initialize NVML|No devices were found|NVML Shared Library"
    r"|Driver not initialized|amdgpu not found|AMDSMI_STATUS|amdsmi_cli_exceptions",
    re.IGNORECASE,
)
NUMBER = re.compile(r"^[-+]?\d+(?:\.\d+)?")
UNIT = re.compile(r"\s*\[[^\]]*\]\s*$")
HEADER_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")  # data rows always hold a number or a spaced name
NVIDIA_TABLE_NAME = re.compile(r"^\|\s+(\d+)\s+(.+?)\s+(?:On|Off|WDDM|TCC|N/A)\s+\|")  # Windows: driver model
NVIDIA_TABLE_STATE = re.compile(r"^\|\s*(\S+)\s+(\S+)\s+\S+\s+(\S+)\s*/\s*\S+\s*\|\s*(\S+)\s*/\s*(\S+)\s*\|\s*(\S+)")
NVIDIA_DRIVER = re.compile(r"(?:Driver|KMD) Version:\s*(\S+)")
NVIDIA_CUDA = re.compile(r"CUDA (?:UMD )?Version:\s*(\S+)")
ROCM_TEMPERATURE = re.compile(r"temperature \(sensor (edge|junction|hotspot|mem|memory)\)")
ROCM_TEMPERATURE_KEYS = {
    "edge": "temp_edge_c",
    "junction": "temp_junction_c",
    "hotspot": "temp_junction_c",
    "mem": "temp_mem_c",
    "memory": "temp_mem_c",
}
CONCISE_CELL_GAP = re.compile(r"(?<![,\s])\s+")  # `0x73df,   45052` and `N/A, N/A, 0` stay one cell each
CONCISE_COLUMNS = {
    "device": "index",
    "gpu": "index",
    "temp": "temp_edge_c",
    "power": "power_w",
    "avgpwr": "power_w",
    "sclk": "clock_sm_mhz",
    "mclk": "clock_mem_mhz",
    "fan": "fan_pct",
    "gpu%": "util_pct",
}
MIB = 1024.0 * 1024.0
JSON_LINE = re.compile(r"^[ \t]*([\[{])", re.MULTILINE)
JSON_ATTEMPTS = 5


def nvidia_smi_argv():
    return ["nvidia-smi", "--query-gpu=" + ",".join(NVIDIA_QUERY_FIELDS), "--format=csv,nounits"]


def rocm_smi_argv():
    return list(ROCM_SMI_ARGV)


def amd_smi_argv():
    return list(AMD_SMI_ARGV)


def tool_failure(text):
    """For a known failure message (no driver, NVML mismatch, ...) the failure line, else None."""
    if FAILURE.search(text or ""):
        return _failed(text)
    return None


def parse_nvidia_smi_csv(text, fields=NVIDIA_QUERY_FIELDS):
    """`--query-gpu=... --format=csv[,noheader][,nounits]`. With a header the columns name themselves;
    without one they are `fields`, in order."""
    lines = [line for line in (text or "").splitlines() if line.strip()]
    names = list(fields)
    if lines and _is_csv_header(lines[0]):
        names = [UNIT.sub("", cell).strip() for cell in lines.pop(0).split(",")]
    gpus = []
    for line in lines:
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) == len(names):
            gpus.append(_nvidia_gpu(dict(zip(names, cells)), len(gpus)))
    return _reading("nvidia-smi", text, gpus)


def parse_nvidia_smi_table(text):
    """Plain `nvidia-smi`: the GPU table only (names there may be cut short, e.g. `RTX 2080 ...`)."""
    gpus, lines = [], (text or "").splitlines()
    for number, line in enumerate(lines[:-1]):
        name = NVIDIA_TABLE_NAME.match(line)
        state = NVIDIA_TABLE_STATE.match(lines[number + 1]) if name else None
        if state:
            gpu = _new_gpu(int(name.group(1)), name.group(2))
            fan, temperature, power, used, total, util = state.groups()
            gpu.update(
                fan_pct=_number(fan),
                temp_edge_c=_number(temperature),
                power_w=_number(power),
                vram_used_mib=_number(used),
                vram_total_mib=_number(total),
                util_pct=_number(util),
            )
            gpus.append(gpu)
    return _reading("nvidia-smi", text, gpus)


def nvidia_smi_versions(text):
    """{driver, cuda} from plain nvidia-smi's banner; driver 610+ says KMD / CUDA UMD Version."""
    driver, cuda = NVIDIA_DRIVER.search(text or ""), NVIDIA_CUDA.search(text or "")
    return {"driver": driver.group(1) if driver else None, "cuda": cuda.group(1) if cuda else None}


def parse_rocm_smi_json(text):
    """`rocm-smi ... --json` from ROCm 5.x and the older compact form; values are strings, sensors may be absent."""
    document = _json_in(text, "{")
    gpus = []
    for card, values in document.items() if isinstance(document, dict) else ():
        if _card_number(card) is not None and isinstance(values, dict):  # "system" holds the driver version
            gpus.append(_rocm_gpu(_card_number(card), values))
    return _reading("rocm-smi", text, sorted(gpus, key=lambda gpu: gpu["index"]))


def parse_rocm_smi_concise(text):
    """Plain `rocm-smi` (its `Concise Info` table), by column name: ROCm 5 and 6 lay it out differently."""
    lines = (text or "").splitlines()
    header = next((number for number, line in enumerate(lines) if re.match(r"^(Device|GPU)\s+.*Temp", line)), None)
    gpus = []
    if header is not None:
        qualifiers = " ".join(lines[header : header + 2])
        columns = re.sub(r"\([^)]*\)", " ", lines[header]).lower().split()
        for line in lines[header + 1 :]:
            cells = CONCISE_CELL_GAP.split(line.strip())
            if re.match(r"^\d+\s", line) and len(cells) == len(columns):
                gpus.append(_concise_gpu(dict(zip(columns, cells)), "Junction" in qualifiers))
    return _reading("rocm-smi", text, gpus)


def parse_amd_smi_json(text):
    """`amd-smi metric --json` (ROCm 6+): a list of GPUs, or {"gpu_data": [...]} in later releases.
    Readings are {"value", "unit"} objects or "N/A"; its "MB" are MiB (the library divides by 1024*1024)."""
    document = _json_in(text, "[{")
    items = document.get("gpu_data") if isinstance(document, dict) else document
    gpus = []
    for position, item in enumerate(items if isinstance(items, list) else []):
        if isinstance(item, dict):
            gpus.append(_amd_smi_gpu(item, position))
    return _reading("amd-smi", text, gpus)


def parse_rocminfo(text):
    """GPU agents from `rocminfo`: [{gfx, name, compute_units, chip_id}]; CPU agents are left out."""
    agents = []
    for block in re.split(r"\n\*{3,}\s*\nAgent \d+\s*\n\*{3,}\s*\n", text or "")[1:]:
        fields = dict(re.findall(r"^  (\S[^:\n]*?):\s*(.*?)\s*$", block, re.MULTILINE))  # the agent's own lines
        if fields.get("Device Type") == "GPU":
            chip = re.search(r"\((0x[0-9a-fA-F]+)\)", fields.get("Chip ID", ""))
            agents.append(
                {
                    "gfx": fields.get("Name"),
                    "name": fields.get("Marketing Name"),
                    "compute_units": _integer(fields.get("Compute Unit")),
                    "chip_id": chip and chip.group(1),
                }
            )
    return agents


def _is_csv_header(line):
    return all(HEADER_FIELD.match(UNIT.sub("", cell).strip()) for cell in line.split(","))


def _nvidia_gpu(cells, position):
    gpu = _new_gpu(position, None)
    for field, value in cells.items():
        key = NVIDIA_FIELD_KEYS.get(field)
        if key:
            gpu[key] = _text(value) if key == "name" else _number(value)
    for field, key in NVIDIA_FALLBACK_KEYS.items():
        if gpu[key] is None and field in cells:
            gpu[key] = _number(cells[field])
    gpu["index"] = _integer(cells.get("index"), position)
    return gpu


def _rocm_gpu(index, values):
    readings = {key.strip().rstrip(":").strip().lower(): value for key, value in values.items()}
    gpu = _new_gpu(index, _text(readings.get("card series") or readings.get("card model")))
    gpu["util_pct"] = _number(readings.get("gpu use (%)"))
    gpu["vram_used_mib"] = _mib(readings.get("vram total used memory (b)"))
    gpu["vram_total_mib"] = _mib(readings.get("vram total memory (b)"))
    gpu["fan_pct"] = _number(readings.get("fan speed (%)"))
    gpu["clock_sm_mhz"] = _number(_strip_parens(readings.get("sclk clock speed")))
    gpu["clock_mem_mhz"] = _number(_strip_parens(readings.get("mclk clock speed")))
    for key, value in readings.items():
        sensor = ROCM_TEMPERATURE.match(key)
        if sensor:
            gpu[ROCM_TEMPERATURE_KEYS[sensor.group(1)]] = _number(value)
        elif "graphics package power" in key and not key.startswith("max"):
            gpu["power_w"] = _number(value)
    return gpu


def _concise_gpu(cells, temperature_is_junction):
    gpu = _new_gpu(None, None)
    for column, value in cells.items():
        key = CONCISE_COLUMNS.get(column)
        if key == "temp_edge_c" and temperature_is_junction:
            key = "temp_junction_c"
        if key:
            gpu[key] = _number(value)
    gpu["index"] = _integer(cells.get("device", cells.get("gpu")))
    return gpu


def _amd_smi_gpu(item, position):
    def reading(*path):
        node = item
        for step in path:
            node = node.get(step) if isinstance(node, dict) else None
        return _number(node.get("value") if isinstance(node, dict) else node)

    market_name = item.get("asic", {}).get("market_name") if isinstance(item.get("asic"), dict) else None
    gpu = _new_gpu(_integer(item.get("gpu"), position), _text(market_name))
    gpu.update(
        util_pct=reading("usage", "gfx_activity"),
        vram_used_mib=reading("mem_usage", "used_vram"),
        vram_total_mib=reading("mem_usage", "total_vram"),
        temp_edge_c=reading("temperature", "edge"),
        temp_junction_c=reading("temperature", "hotspot"),
        temp_mem_c=reading("temperature", "mem"),
        power_w=reading("power", "socket_power"),
        fan_pct=reading("fan", "usage"),
        clock_sm_mhz=reading("clock", "gfx_0", "clk"),
        clock_mem_mhz=reading("clock", "mem_0", "clk"),
    )
    return gpu


def _new_gpu(index, name):
    gpu = dict.fromkeys(GPU_KEYS)
    gpu["index"], gpu["name"] = index, name
    return gpu


def _reading(tool, text, gpus):
    error = None
    if not gpus:
        error = _failed(text) if (text or "").strip() else "tool present but failed: it printed nothing"
    return {"tool": tool, "gpus": gpus, "error": error}


def _failed(text):
    """The first two non-empty lines, as one: NVML's mismatch message puts the library version on line 2."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()][:2]
    return ("tool present but failed: " + "; ".join(lines))[:300]


def _json_in(text, openers):
    """The JSON document in text, past any lines the tool printed first (`Exception caught: map::at`,
    warnings, even `[WARNING] ...`): each line that opens like JSON is tried, a few at most."""
    for attempt, start in enumerate(match.start(1) for match in JSON_LINE.finditer(text or "")):
        if attempt == JSON_ATTEMPTS:
            break
        if text[start] in openers:
            try:
                return json.JSONDecoder().raw_decode(text, start)[0]  # trailing chatter is ignored
            except ValueError:
                continue
    return None


def _number(value):
    """A float from `45`, `106.56 W`, `46.0°C`, `(500Mhz)` or 45.0; None for N/A, [Unknown Error], None, ..."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    match = NUMBER.match(str(value).strip())
    return float(match.group(0)) if match else None


def _integer(value, default=None):
    number = _number(value)
    return int(number) if number is not None else default


def _mib(byte_text):
    number = _number(byte_text)
    return number / MIB if number is not None else None


def _strip_parens(value):
    return value.strip("()") if isinstance(value, str) else value


def _text(value):
    if not isinstance(value, str) or not value.strip() or value.strip().upper() in ("N/A", "[N/A]"):
        return None
    return value.strip()


def _card_number(key):
    match = re.match(r"^card(\d+)$", key)
    return int(match.group(1)) if match else None
