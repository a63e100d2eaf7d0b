"""The dataset check from the controller's side: read the job's data YAML, describe it for the checker
(runner/hostside/datacheck.py), and run the checker here (`runner check`) or on the job's host after
the sync (submit's preflight).

The YAML is parsed here, with PyYAML, not on the host: a job image may have no PyYAML, and a parser
of our own for "the subset data YAMLs use" would meet the rest of YAML sooner or later (ultralytics'
own files carry multi-line `download:` scripts). The host gets the resolved description as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runner.base.errors import PreflightFailed, SpecError
from runner.hosts import Host
from runner.hostside import datacheck
from runner.jobs.layout import JobLayout, run_agent
from runner.jobs.specfile import FieldPath, LoadedJob, Marks, dotted, load_yaml_mapping
from runner.pipeline.placement import DatasetPlacement, plan_datasets

SPLITS = ("train", "val", "test")
REQUIRED_SPLITS = ("train", "val")
HOST_CHECK_TIMEOUT_S = 3600  # millions of images on a slow disk take minutes; a hung host is still caught


def check_here(loaded: LoadedJob) -> dict[str, Any]:
    """`runner check`: the checker in this process, against the files on this machine."""
    datasets = plan_datasets(loaded)
    description = describe(loaded, datasets)
    report: dict[str, Any] = datacheck.check(description, str(loaded.workdir), relocations(loaded, datasets))
    return report


def check_on_host(host: Host, layout: JobLayout, description: dict[str, Any]) -> dict[str, Any]:
    """Submit's preflight: the checker on the host, against the synced workdir and linked datasets."""
    result = run_agent(
        host, "datacheck", layout.work, stdin=json.dumps(description).encode(), timeout=HOST_CHECK_TIMEOUT_S
    ).check()
    report: dict[str, Any] = json.loads(result.text)
    return report


def refusal(report: dict[str, Any], job_file: Path) -> PreflightFailed:
    """One line: how many errors, the first offenders as file:line, and the ways on."""
    offenders = "; ".join(offender_text(offender) for offender in datacheck.first_errors(report))
    count = report["errors"]
    return PreflightFailed(
        f"preflight: {count} error{'s' if count != 1 else ''} in dataset {report['dataset']}: {offenders}"
        f" (`runner check {job_file}` lists them; --skip-preflight starts the job anyway)"
    )


def offender_text(offender: dict[str, Any]) -> str:
    where = offender["file"] if offender["line"] is None else f"{offender['file']}:{offender['line']}"
    return f"{where}: {offender['detail']}"


def describe(loaded: LoadedJob, datasets: list[DatasetPlacement]) -> dict[str, Any]:
    """The job's data YAML as the checker takes it. Errors in the YAML's shape (no train split, names
    that are not a list or an id -> name mapping) are SpecErrors at their place in the YAML."""
    relative = loaded.spec.dataset
    if relative is None:
        raise loaded.error(("dataset",), "no data YAML named: nothing to check")
    path = _local_yaml(loaded, datasets, relative)
    data, marks = load_yaml_mapping(path, what="data YAML")
    shape = _YamlShape(path, marks)
    names = shape.names(data.get("names"))
    nc = shape.class_count(data.get("nc"))
    if names is None and nc is None:
        raise shape.error((), "needs names (a list, or a mapping of class id to name) or nc")
    return {
        "yaml": relative,
        "lines": {str(key[0]): mark.line for key, mark in marks.keys.items() if len(key) == 1},
        "path": shape.root(data.get("path")),
        "splits": shape.splits(data),
        "nc": nc,
        "names": names,
        "kpt_shape": shape.keypoints(data.get("kpt_shape")),
    }


def relocations(loaded: LoadedJob, datasets: list[DatasetPlacement]) -> list[tuple[str, str]]:
    """Where each linked dataset really is on this machine: on the host it is linked into the
    workdir, here it is wherever the job file's `datasets:` says."""
    return [
        (str(loaded.workdir / plan.link), str(plan.source)) for plan in datasets if plan.link != plan.inside_workdir
    ]


def _local_yaml(loaded: LoadedJob, datasets: list[DatasetPlacement], relative: str) -> Path:
    path = loaded.workdir / relative
    for plan in datasets:
        if relative == plan.link or relative.startswith(plan.link + "/"):
            path = plan.source / relative[len(plan.link) :].lstrip("/")
    if not path.is_file():
        raise loaded.error(
            ("dataset",), f"'{relative}' is not a file in the workdir ({loaded.workdir}) or in a dataset linked into it"
        )
    return path


class _YamlShape:
    """The data YAML's fields, each checked for the shape the trainers accept, errors at their place."""

    def __init__(self, path: Path, marks: Marks) -> None:
        self.path, self.marks = path, marks

    def error(self, field: FieldPath, message: str) -> SpecError:
        mark = self.marks.key_or_value(field)
        return SpecError(f"{self.path}:{mark.line}:{mark.column}: {dotted(field)}: {message}")

    def splits(self, data: dict[str, Any]) -> dict[str, list[str]]:
        found = {}
        for split in SPLITS:
            key = "validation" if split == "val" and "val" not in data and "validation" in data else split
            value = data.get(key)  # ultralytics takes `validation:` for `val:`
            if value is None or value == "" or value == []:
                if split in REQUIRED_SPLITS:
                    raise self.error((split,), "required: both trainers need train and val")
                continue
            entries = [value] if isinstance(value, str) else value
            if not isinstance(entries, list) or not all(isinstance(entry, str) and entry for entry in entries):
                raise self.error((key,), "a path (a folder of images or a .txt list of them) or a list of paths")
            found[split] = entries
        return found

    def names(self, value: Any) -> list[str] | None:
        if value is None:
            return None
        if isinstance(value, list):
            return [str(name) for name in value]
        if not isinstance(value, dict):
            raise self.error(("names",), "a list of class names, or a mapping of class id to name")
        try:
            by_id = {int(key): str(name) for key, name in value.items() if not isinstance(key, bool)}
        except (TypeError, ValueError):
            raise self.error(("names",), "a mapping's keys are class ids: 0, 1, 2, ...") from None
        if sorted(by_id) != list(range(len(value))):
            raise self.error(("names",), f"class ids must be 0 to {len(value) - 1}, each once")
        return [by_id[index] for index in range(len(by_id))]

    def class_count(self, value: Any) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.error(("nc",), f"the number of classes, a whole number from 1 on, not {value!r}")
        return value

    def root(self, value: Any) -> str | None:
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise self.error(("path",), "the dataset's root folder, a path")
        return value

    def keypoints(self, value: Any) -> list[int] | None:
        if value is None:
            return None
        valid = isinstance(value, list) and len(value) == 2
        if not valid or not all(isinstance(item, int) and not isinstance(item, bool) and item > 0 for item in value):
            raise self.error(("kpt_shape",), "[keypoints, values per keypoint], e.g. [17, 3]")
        return list(value)
