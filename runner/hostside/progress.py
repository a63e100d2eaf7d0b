"""Training progress from the tail of a train.log, and from the results files trainers write.

Standard library only, Python >= 3.7: copied to the host beside agent.py and imported there as `progress`.

Epochs: every epoch this module returns counts from 1, and `epochs` is how many the run has. Ultralytics
prints `2/3` for the second of three epochs and is taken as printed; YOLOv7 prints `epoch/(epochs - 1)`
from 0 (`0/2` .. `2/2` for three epochs), so 1 is added to both numbers. A generic tqdm bar's
`Epoch 3/10` is reported as printed: nothing says how that trainer counts.
"""

import csv
import re

# CSI (colours, erase, cursor moves), OSC and two-byte escapes; CSI keeps its parameter and final byte.
ESCAPE = re.compile(r"\x1b\[([0-?]*)[ -/]*([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
ERASE_TO_END = re.compile(r"\x1b\[0?K")
LINE_ERASES = ("\x1b[K", "\x1b[0K", "\x1b[2K")  # after a \r these wipe whatever the line showed before
RECORDER_LINE = re.compile(r"^Script (started|done) on ")  # util-linux `script`'s own lines, not the trainer's

NUMBER = r"[-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|nan|inf)"
# `   2/3    0G   1.072   0.9482   0.6509   10   64: 25% ...` (ultralytics) and the YOLOv7 twin with 4 losses.
EPOCH_LINE = re.compile(r"^( *)(\d+)/(\d+)\s+(\S+)((?:\s+" + NUMBER + r")+)\s*:(.*)$")
HEADER = re.compile(r"^\s*Epoch\s+(GPU_mem|gpu_mem)\s+(.*\S)")
VAL_ALL = re.compile(r"^\s*all\s+(\d+)\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)")
VAL_BAR = re.compile(r"^\s*Class\s+Images\s+")
BANNERS = ((re.compile(r"^Ultralytics \d|engine/trainer: "), "ultralytics"), (re.compile(r"^YOLOR "), "yolov7"))
STARTING = re.compile(r"^Starting training for (\d+) epochs")  # printed by ultralytics and YOLOv7 alike
BAR_HINT = re.compile(r"\d%(?:\||\s+[\u2501\u2500\u2578])")
# tqdm: ` 25%|▌ | 1/4 [00:02<00:06,  2.05s/it]`; lines cut at the terminal width may lose the end.
TQDM_BAR = re.compile(
    r"\d+%\|[^|]*\|\s*(?P<batch>\d+)/(?P<batches>\d+)\s*\[[\d:]+"
    r"(?:<(?P<remaining>[\d:?]+))?(?:,\s*(?P<rate>[^,\]\s]+))?"
)
# ultralytics' own bar: `25% ━━━───────── 1/4 2.9it/s 0.1s<1.0s`; the rate is left out while unknown.
ULTRA_BAR = re.compile(
    r"\d+% [\u2501\u2500\u2578]+ (?P<batch>\d+)/(?P<batches>\d+)\s+(?:(?P<rate>\S+/\S+)\s+)?"
    r"[\d:.]+s?(?:<(?P<remaining>[\d:.]+s?))?\s*$"
)
RATE = re.compile(r"^([\d.]+)(?:([kKMG]?)([A-Za-z]+)/s|s/([A-Za-z]+))$")
UNIT_SCALE = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}
TQDM_POSTFIX_LOSS = re.compile(r"[,\s]([A-Za-z_]*loss[A-Za-z_]*)=(" + NUMBER + r")")  # `..., loss=0.0230]`
GENERIC_EPOCH = re.compile(r"\bepoch\W*(\d+)\s*/\s*(\d+)", re.IGNORECASE)
DEFAULT_LOSS_NAMES = {  # used when the column header scrolled out of the tail
    "ultralytics": {
        3: ["box", "cls", "dfl"],
        4: ["box", "seg", "cls", "dfl"],
        5: ["box", "pose", "kobj", "cls", "dfl"],
    },
    "yolov7": {4: ["box", "obj", "cls", "total"]},
}
FIELDS = (
    "format",
    "phase",
    "epoch",
    "epochs",
    "batch",
    "batches",
    "rate_its",
    "epoch_eta_s",
    "run_eta_s",
    "losses",
    "val",
    "last_line",
)


def render_carriage_returns(text):
    """The log as a terminal leaves it: each \\r-updated line shows only its final state.
    \\r\\n is a newline and erase-line codes are applied; colours and everything else are kept."""
    return "\n".join(_render_line(line, True) for line in _split_lines(text))


def parse_log_tail(text):
    """What the tail of a train.log says about the run; see FIELDS for the keys (missing facts are None).
    `val` is {images, instances, precision, recall, mAP50, mAP50-95} from the latest `all` row.
    run_eta_s leaves out validation time: the log says nothing about it until it has run."""
    lines = [_render_line(line, False) for line in _split_lines(text)]
    result = dict.fromkeys(FIELDS)
    result["format"] = "unknown"
    result["last_line"] = _last_line(lines)
    found = _scan(lines)
    if found["val"]:
        result["val"] = _val_metrics(found["val"])
    if found["train"]:
        _read_train_line(result, found["train"], found["header"])
        result["phase"] = "val" if found["val_after_train"] else "train"
    elif found["banner"]:
        # A known trainer that has not reached its first epoch: its other bars (dataset scans) are no progress.
        result["format"] = found["banner"]
        result["epochs"] = found["planned_epochs"]
    elif found["bar"]:
        _read_generic_bar(result, found["bar"])
    return result


def _split_lines(text):
    return text.replace("\r\n", "\n").split("\n")


def _render_line(line, keep_ansi):
    if "\r" not in line and "\x1b" not in line:
        return line
    if "\r" not in line and "\x1b[1K" not in line and "\x1b[2K" not in line:
        # One pass from column 0 never leaves text right of the cursor, so erase-to-end has nothing to erase.
        return ERASE_TO_END.sub("", line) if keep_ansi else ESCAPE.sub("", line)
    segments = line.split("\r")
    cells, trailing = [], ""
    for segment in segments[_first_visible_segment(segments) :]:
        trailing = _overlay(cells, segment, keep_ansi)
    return "".join(cells) + trailing


def _first_visible_segment(segments):
    """A segment that erases the line, or is at least as wide as every earlier one, hides all before it:
    only the rest need character work, so a line of 500 bar updates costs one overlay, not 500."""
    start, widest = 0, 0
    for index, segment in enumerate(segments):
        if segment.startswith(LINE_ERASES):
            start, widest = index, 0
        width = len(ESCAPE.sub("", segment))
        if width >= widest:
            start, widest = index, width
    return start


def _overlay(cells, segment, keep_ansi):
    """Write one \\r-segment over the line from column 0; returns escapes left after the last character."""
    cursor, pending, position = 0, "", 0
    for code in ESCAPE.finditer(segment):
        cursor, pending = _write(cells, cursor, segment[position : code.start()], pending)
        position = code.end()
        if code.group(2) == "K":
            _erase(cells, cursor, code.group(1))
        elif keep_ansi:
            pending += code.group(0)
    cursor, pending = _write(cells, cursor, segment[position:], pending)
    return pending


def _write(cells, cursor, text, pending):
    if not text:
        return cursor, pending
    chars = list(text)
    chars[0] = pending + chars[0]  # a colour code travels with the character it colours
    cells[cursor : cursor + len(chars)] = chars
    return cursor + len(chars), ""


def _erase(cells, cursor, mode):
    if mode in ("", "0"):
        del cells[cursor:]
    elif mode == "1":
        cells[:cursor] = [" "] * cursor
    elif mode == "2":
        cells[:] = [" "] * cursor


def _last_line(lines):
    for line in reversed(lines):
        text = line.strip()
        if text and not RECORDER_LINE.match(text):
            return text
    return None


def _scan(lines):
    """One pass, keeping the latest line of each kind; the header kept is the one above the latest train line."""
    found = dict.fromkeys(("train", "header", "val", "bar", "banner", "val_after_train", "planned_epochs"))
    header = None
    for line in lines:
        if EPOCH_LINE.match(line):
            found["train"], found["header"], found["val_after_train"] = line, header, False
        elif HEADER.match(line):
            header = line
        elif VAL_ALL.match(line):
            found["val"], found["val_after_train"] = line, found["train"] is not None
        elif VAL_BAR.match(line):
            found["val_after_train"] = found["train"] is not None
        elif "%" in line and BAR_HINT.search(line):
            found["bar"] = line
        elif STARTING.match(line):
            found["planned_epochs"] = int(STARTING.match(line).group(1))
        elif found["banner"] is None:
            found["banner"] = next((name for pattern, name in BANNERS if pattern.search(line)), None)
    return found


def _read_train_line(result, line, header):
    indent, epoch, epochs, _memory, values, rest = EPOCH_LINE.match(line).groups()
    numbers = [_float(value) for value in values.split()]
    losses = numbers[:-2]  # the last two columns are the instance/label count and the image size
    if header:
        style, names = _header_style(header)
    else:  # scrolled out of the tail: YOLOv7 pads the epoch to 10 columns and has 4 losses, ultralytics pads to 11
        yolov7 = len(indent) + len(epoch) + 1 + len(epochs) == 10 and len(losses) == 4
        style, names = ("yolov7" if yolov7 else "ultralytics"), None
    if not names or len(names) != len(losses):
        names = DEFAULT_LOSS_NAMES[style].get(len(losses)) or ["loss%d" % (n + 1) for n in range(len(losses))]
    zero_based = style == "yolov7"
    result.update(
        format=style, epoch=int(epoch) + zero_based, epochs=int(epochs) + zero_based, losses=dict(zip(names, losses))
    )
    _fill_timing(result, _parse_bar(rest))


def _header_style(header):
    match = HEADER.match(header)
    columns = match.group(2).split()[:-2]  # drop Instances/Size or labels/img_size
    names = [column[:-5] if column.endswith("_loss") else column for column in columns]
    return ("ultralytics" if match.group(1) == "GPU_mem" else "yolov7"), names


def _read_generic_bar(result, line):
    bar = _parse_bar(line)
    if bar is None:
        return
    result["format"] = "tqdm"
    epoch = GENERIC_EPOCH.search(line)
    if epoch:
        result["epoch"], result["epochs"] = int(epoch.group(1)), int(epoch.group(2))
    losses = {name: _float(value) for name, value in TQDM_POSTFIX_LOSS.findall(line)}
    if losses:
        result["losses"] = losses
    _fill_timing(result, bar)


def _parse_bar(text):
    """{batch, batches, rate_its, remaining_s} from a tqdm or ultralytics bar, or None."""
    match = TQDM_BAR.search(text) or ULTRA_BAR.search(text)
    if match is None:
        return None
    return {
        "batch": int(match.group("batch")),
        "batches": int(match.group("batches")),
        "rate_its": _rate(match.group("rate")),
        "remaining_s": _seconds(match.group("remaining")),
    }


def _fill_timing(result, bar):
    if bar is None:
        return
    batch, batches, rate = bar["batch"], bar["batches"], bar["rate_its"]
    result.update(batch=batch, batches=batches, rate_its=rate)
    remaining = bar["remaining_s"]
    if batch >= batches:
        remaining = 0.0
    elif remaining is None and rate:
        remaining = (batches - batch) / rate
    result["epoch_eta_s"] = remaining
    epoch, epochs = result["epoch"], result["epochs"]
    if remaining is not None and rate and epoch is not None and epochs is not None:
        result["run_eta_s"] = remaining + max(0, epochs - epoch) * batches / rate


def _rate(text):
    """Iterations per second from `5.7it/s`, `2.3Kit/s` or `2.05s/it`; byte rates and `?it/s` are None."""
    match = RATE.match(text or "")
    if match is None:
        return None
    number, prefix, unit, inverse_unit = match.groups()
    value = _float(number)
    if value is None or (unit or inverse_unit) == "B":
        return None
    if inverse_unit:
        return 1.0 / value if value else None
    return value * UNIT_SCALE[prefix]


def _seconds(text):
    """Seconds from `1.0s`, `01:02`, `1:02:03`; `?` and junk are None."""
    total = 0.0
    for part in (text or "?").rstrip("s").split(":"):
        value = _float(part)
        if value is None:
            return None
        total = total * 60 + value
    return total


def _val_metrics(line):
    images, instances, precision, recall, map50, map50_95 = VAL_ALL.match(line).groups()
    return {
        "images": int(images),
        "instances": int(instances),
        "precision": _float(precision),
        "recall": _float(recall),
        "mAP50": _float(map50),
        "mAP50-95": _float(map50_95),
    }


def _float(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------- results files

LOWEST = float("-inf")
# accuracy: a classifier's (and runner's demo's) metric; a row has it only when its file does.
RESULT_METRICS = {
    "precision": "precision",
    "recall": "recall",
    "map50": "mAP50",
    "map50-95": "mAP50-95",
    "accuracy": "accuracy",
}
RESULTS_TXT_COLUMNS = (
    "epoch",
    "gpu_mem",
    "box",
    "obj",
    "cls",
    "total",
    "labels",
    "img_size",
    "precision",
    "recall",
    "mAP50",
    "mAP50-95",
    "val_box",
    "val_obj",
    "val_cls",
)


def parse_results_csv(text):
    """Ultralytics' results.csv (any column set; older versions pad headers with spaces).
    Returns {rows, latest, best}; each row is {epoch, losses, precision, recall, mAP50, mAP50-95}."""
    reader = csv.reader(text.splitlines())
    header = [column.strip() for column in next(reader, [])]
    rows = []
    for values in reader:
        cells = dict(zip(header, (value.strip() for value in values)))
        epoch = _float(cells.get("epoch"))
        if epoch is None or len(values) < len(header):
            continue  # a blank line, or the row the trainer is writing right now
        row = _empty_row(int(epoch))
        for column, value in cells.items():
            _place_csv_value(row, column, _float(value))
        rows.append(row)
    return _summary(rows)


def _place_csv_value(row, column, value):
    group, _, name = column.partition("/")
    if group == "train" and name.endswith("_loss"):
        row["losses"][name[:-5]] = value
    elif group == "train" and name == "loss":  # a single-loss training (runner's own demo)
        row["losses"]["loss"] = value
    elif group == "metrics":
        # `metrics/mAP50-95(B)`: (B) is the box metric; segment/pose runs add (M)/(P) columns, left out here.
        key, _, suffix = name.partition("(")
        if suffix in ("", "B)") and key.lower() in RESULT_METRICS:
            row[RESULT_METRICS[key.lower()]] = value


def parse_results_txt(text):
    """YOLOv7's results.txt: no header, one row per epoch (columns in RESULTS_TXT_COLUMNS), epochs from 0.
    Returns the same shape as parse_results_csv, with epochs counted from 1."""
    rows = []
    for line in text.splitlines():
        values = dict(zip(RESULTS_TXT_COLUMNS, line.split()))
        epoch = values.get("epoch", "").partition("/")[0]
        if not epoch.isdigit() or len(values) < 12:
            continue
        row = _empty_row(int(epoch) + 1)
        row["losses"] = {name: _float(values.get(name)) for name in ("box", "obj", "cls", "total")}
        for key in ("precision", "recall", "mAP50", "mAP50-95"):
            row[key] = _float(values.get(key))
        rows.append(row)
    return _summary(rows)


def _empty_row(epoch):
    return {"epoch": epoch, "losses": {}, "precision": None, "recall": None, "mAP50": None, "mAP50-95": None}


def _summary(rows):
    """latest: the last row. best: highest mAP50-95, then mAP50; a tie goes to the later epoch, as the
    weights do (YOLOv7 saves best.pt again on an equal score). NaN and missing scores rank lowest."""
    best, best_key = None, None
    for row in rows:
        key = tuple(
            value if value is not None and value == value else LOWEST for value in (row["mAP50-95"], row["mAP50"])
        )
        if key != (LOWEST, LOWEST) and (best_key is None or key >= best_key):
            best, best_key = row, key
    return {"rows": rows, "latest": rows[-1] if rows else None, "best": best}


# ---------------------------------------------------------------- run settings


def parse_run_settings(text):
    """Top-level `key: value` pairs of a flat YAML file the trainers write (ultralytics args.yaml,
    YOLOv7 opt.yaml and hyp.yaml): numbers, booleans, null, quoted strings and `- item` lists."""
    settings, last_key = {}, None
    for line in text.splitlines():
        if line.startswith("- ") and last_key is not None:
            if not isinstance(settings[last_key], list):
                settings[last_key] = []
            settings[last_key].append(_scalar(line[2:]))
        elif ":" in line and not line[:1].isspace() and not line.startswith("#"):
            last_key, _, value = line.partition(":")
            settings[last_key] = _scalar(value)
    return settings


def _scalar(text):
    text = text.strip()
    if text in ("", "null", "~"):
        return None
    if text in ("true", "false"):
        return text == "true"
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
