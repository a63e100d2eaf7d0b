"""The dataset check's report, as text for people (`runner check`; `--json` prints the report itself)."""

from __future__ import annotations

import textwrap
from typing import Any

from runner.pipeline.preflight import offender_text

COLUMNS = ("SPLIT", "IMAGES", "LABELS", "BACKGROUNDS", "EMPTY", "INSTANCES", "SOURCES")
WIDTH = 100


def report_text(report: dict[str, Any]) -> str:
    lines = [f"dataset {report['dataset']}: {report['nc']} classes, checked in {report['seconds']:.2f}s", ""]
    lines += _split_table(report["splits"])
    per_class = [line for split, found in report["splits"].items()
                 for line in _per_class(split, found["instances_per_class"], report["names"])]  # fmt: skip
    lines += ["", *per_class] if per_class else []
    groups = [("dataset", report["problems"])] + [
        (split, found["problems"]) for split, found in report["splits"].items()
    ]
    for severity in ("error", "warning"):
        lines += _problems(groups, severity)
    lines += ["", _verdict(report)]
    return "\n".join(lines)


def _split_table(splits: dict[str, Any]) -> list[str]:
    rows = [COLUMNS] + [
        (split, str(found["images"]), str(found["labels"]), str(found["backgrounds"]), str(found["empty_labels"]),
         str(found["instances"]), ", ".join(found["sources"]) or "-")
        for split, found in splits.items()
    ]  # fmt: skip
    widths = [max(len(row[column]) for row in rows) for column in range(len(COLUMNS) - 1)]
    return [
        "  ".join([cell.ljust(width) for cell, width in zip(row, widths, strict=False)] + [row[-1]]).rstrip()
        for row in rows
    ]


def _per_class(split: str, counts: list[int], names: list[str]) -> list[str]:
    if not any(counts):
        return []
    # strict=False: the agent's report may name fewer classes than it counted; the table shows what it can
    present = ", ".join(f"{name} {count}" for name, count in zip(names, counts, strict=False) if count)
    missing = [name for name, count in zip(names, counts, strict=False) if not count]
    text = f"{split} instances per class: {present}"
    if missing:
        text += f"; none of: {', '.join(missing)}"
    return textwrap.wrap(text, WIDTH, subsequent_indent="  ", break_on_hyphens=False)


def _problems(groups: list[tuple[str, dict[str, Any]]], severity: str) -> list[str]:
    lines = []
    for where, problems in groups:
        for kind, entry in problems.items():
            if entry["severity"] != severity:
                continue
            lines.append(f"{severity} {kind} ({where}): {entry['count']}")
            lines += [f"  {offender_text(offender)}" for offender in entry["first"]]
            if entry["count"] > len(entry["first"]):
                lines.append(f"  ... and {entry['count'] - len(entry['first'])} more")
    return ["", *lines] if lines else []


def _verdict(report: dict[str, Any]) -> str:
    errors, warnings = report["errors"], report["warnings"]
    if report["ok"]:
        return f"ok: no errors, {warnings} warning{'s' if warnings != 1 else ''}"
    return (
        f"{errors} error{'s' if errors != 1 else ''}, {warnings} warning{'s' if warnings != 1 else ''}:"
        " `runner submit` refuses this job (--skip-preflight starts it anyway)"
    )
