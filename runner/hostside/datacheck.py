"""The dataset check (`runner check`, and submit's preflight on the host). Standard library only,
Python >= 3.7: the agent runs it on the host, where the data lies, in whatever image the job uses.

Input: the data YAML as the controller read it (PyYAML is not on every host, so the controller parses
it and sends this description as JSON): its path relative to the workdir, the line of each key, `path`,
the splits' entries as written, nc, names (a list) and kpt_shape. Images are found and paired with
labels the way ultralytics and YOLOv7 do it: a split is a folder (searched recursively), a text file
listing images (`./x` relative to the list's folder, other relative names to the workdir, the trainer's
working directory), or one image; an image's label is its path with the last `/images/` replaced by
`/labels/` and the suffix by `.txt`.

Output: a report (a JSON-ready dict): per split, images, labels, instances per class, empty labels,
background images, and problems by kind with their count and first offenders as file:line.
"""

import os
import time

from . import fanout
from .splitscan import Images, Locator, Tally, check_images

ERROR, WARNING = "error", "warning"
REQUIRED_SPLITS = ("train", "val")  # both trainers need these; a missing `test` only matters when used


def check(description, workdir, relocations=(), workers=None):
    """The report for the dataset description (see the module's docstring). relocations: pairs
    (folder as the workdir shows it, folder where it really is), for a check on the controller,
    where a dataset is not linked into the workdir yet; on the host the links are there. workers:
    processes to check images in (default: the cores this process may use, at most 8)."""
    started = time.monotonic()
    workers = workers or fanout.default_workers()
    locator = Locator(os.path.abspath(workdir), relocations)
    names = description.get("names")
    nc = len(names) if names else int(description.get("nc") or 0)
    report = {
        "dataset": description["yaml"],
        "nc": nc,
        "names": names or ["class_%d" % index for index in range(nc)],
        "problems": {},
        "splits": {},
    }
    dataset_problems = Tally(nc, locator)
    _check_classes(description, nc, dataset_problems)
    roots = dataset_roots(description, locator)
    label_dirs_seen = set()  # splits may share label folders: each is searched for orphans once
    for split, entries in description["splits"].items():
        report["splits"][split] = _check_split(
            split, entries, roots, description, nc, locator, label_dirs_seen, workers
        )
    report["problems"] = dataset_problems.problem_report(_severity)
    _summarise(report)
    report["seconds"] = round(time.monotonic() - started, 3)
    return report


def dataset_roots(description, locator):
    """The folders a split's relative entry may be relative to, most likely first.

    `path:` given: ultralytics resolves a relative one against its datasets_dir, which is the working
    directory's `datasets/` when the working directory is not in a git repository (a job's workdir is
    pushed without .git); then the workdir itself and the YAML's folder. No `path:`: ultralytics uses
    the YAML's folder, YOLOv7 its working directory (the workdir)."""
    yaml_dir = os.path.dirname(locator.in_workdir(description["yaml"]))
    path = description.get("path")
    if not path:
        return [yaml_dir, locator.workdir]
    if os.path.isabs(path):
        return [path]
    in_datasets_dir = locator.in_workdir(os.path.join("datasets", path))
    return [in_datasets_dir, locator.in_workdir(path), os.path.normpath(os.path.join(yaml_dir, path))]


def _check_classes(description, nc, tally):
    names, declared = description.get("names"), description.get("nc")
    yaml, lines = description["yaml"], description.get("lines", {})
    if names and declared is not None and int(declared) != len(names):
        tally.add_shown(
            "nc_names_mismatch", yaml, lines.get("nc"), "nc: %s but names lists %d classes" % (declared, len(names))
        )
    if nc <= 0:
        tally.add_shown(
            "no_classes", yaml, lines.get("names") or lines.get("nc"), "neither names nor nc gives any class"
        )


def _check_split(split, entries, roots, description, nc, locator, label_dirs_seen, workers):
    tally = Tally(nc, locator)
    images = Images()
    sources = []
    lines = description.get("lines", {})
    for entry in entries:
        found = _resolve_entry(entry, roots, locator)
        if found is None:
            tried = ", ".join(locator.shown(os.path.normpath(os.path.join(root, entry))) for root in roots)
            tally.add_shown(
                "split_missing",
                description["yaml"],
                lines.get(split),
                "%s: %r is not there (looked for %s)" % (split, entry, tried),
            )
            continue
        sources.append(locator.shown(found))
        images.add_entry(found, locator, tally)
    check_images(images, tally, description.get("kpt_shape"), label_dirs_seen, workers)
    if not images.count and sources:
        tally.add_shown(
            "no_images", description["yaml"], lines.get(split), "%s: no images in %s" % (split, ", ".join(sources))
        )
    elif images.count and tally.labels == 0:
        tally.add_shown(
            "no_labels",
            description["yaml"],
            lines.get(split),
            "%s: none of its %d images has a label file" % (split, images.count),
        )
    severity = _severity if split in REQUIRED_SPLITS else _optional_split_severity
    return dict(tally.counts(), sources=sources, problems=tally.problem_report(severity))


def _resolve_entry(entry, roots, locator):
    """Where a split entry really is (the first candidate that exists); None when it is nowhere. A
    leading `../` is also tried without it, as ultralytics does."""
    if os.path.isabs(entry):
        candidates = [entry]
    else:
        candidates = [os.path.join(root, entry) for root in roots]
        if entry.startswith("../"):
            candidates += [os.path.join(root, entry[3:]) for root in roots]
    for candidate in candidates:
        candidate = os.path.normpath(candidate)
        real = locator.real(candidate)
        if os.path.exists(real):
            return real
    return None


WARNINGS = frozenset(["duplicate_line", "label_without_image", "no_labels"])


def _severity(kind):
    return WARNING if kind in WARNINGS else ERROR


def _optional_split_severity(kind):
    """A `test` split that is missing or empty stops nothing until it is used."""
    return WARNING if kind in WARNINGS or kind in ("split_missing", "no_images") else ERROR


def _summarise(report):
    groups = [report["problems"]] + [split["problems"] for split in report["splits"].values()]
    entries = [entry for group in groups for entry in group.values()]
    report["errors"] = sum(entry["count"] for entry in entries if entry["severity"] == ERROR)
    report["warnings"] = sum(entry["count"] for entry in entries if entry["severity"] == WARNING)
    report["ok"] = report["errors"] == 0


def first_errors(report, limit=3):
    """The first offenders of the report's errors, dataset-level first: for a one-line message."""
    found = []
    groups = [report["problems"]] + [split["problems"] for split in report["splits"].values()]
    for group in groups:
        for kind, entry in group.items():
            if entry["severity"] == ERROR:
                found += [dict(offender, kind=kind) for offender in entry["first"]]
    return found[:limit]
