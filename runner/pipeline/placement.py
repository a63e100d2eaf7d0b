"""Putting a job's files on its host: the workdir into the job directory, datasets into the host's
shared data directory (once per host, then only what changed), linked into the job's workdir."""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass
from pathlib import Path

from runner.hosts import Host, SyncStats
from runner.jobs.layout import JobLayout
from runner.jobs.specfile import LoadedJob
from runner.transfer.push import push_tree
from runner.transfer.syncignore import ALWAYS_EXCLUDED, load_excludes

# Links every (target, link) pair given as arguments; refuses to replace anything already there.
LINK_SCRIPT = """
while [ "$#" -gt 0 ]; do
    if [ -e "$2" ] || [ -L "$2" ]; then echo "runner: $2 already exists in the workdir" >&2; exit 1; fi
    mkdir -p -- "$(dirname -- "$2")" && ln -s -- "$1" "$2" || exit 1
    shift 2
done
"""


@dataclass(frozen=True)
class DatasetPlacement:
    name: str
    source: Path
    link: str  # relative to the job's workdir
    inside_workdir: str | None  # the source's path inside the workdir, if it lies there

    @property
    def host_folder(self) -> str:
        """Named by the dataset and where it comes from: two folders both called `coco` never mix."""
        return f"{self.name}-{hashlib.sha256(str(self.source).encode()).hexdigest()[:10]}"


def plan_datasets(loaded: LoadedJob) -> list[DatasetPlacement]:
    """Check every dataset folder before anything moves; errors point at the job file."""
    plans = []
    for name, dataset in loaded.spec.datasets.items():
        source = (loaded.path.resolve().parent / dataset.path).resolve()
        if not source.is_dir():
            raise loaded.error(("datasets", name, "path"), f"'{source}' is not a directory")
        inside = source.relative_to(loaded.workdir).as_posix() if source.is_relative_to(loaded.workdir) else None
        if inside == ".":
            raise loaded.error(("datasets", name, "path"), "a dataset cannot be the whole workdir")
        plans.append(DatasetPlacement(name, source, dataset.link or inside or f"datasets/{name}", inside))
    return plans


def push_workdir(host: Host, loaded: LoadedJob, layout: JobLayout, datasets: list[DatasetPlacement]) -> SyncStats:
    # Datasets inside the workdir travel once, to the shared data directory, not with every job.
    excludes = load_excludes(loaded.workdir) + [f"/{plan.inside_workdir}" for plan in datasets if plan.inside_workdir]
    return push_tree(host, loaded.workdir, layout.work, excludes)


def push_datasets(host: Host, layout: JobLayout, datasets: list[DatasetPlacement]) -> dict[str, SyncStats]:
    stats, links = {}, []
    for plan in datasets:
        if host.shares_this_filesystem:
            target = str(plan.source)  # the host reads it where it is: the job uses it in place
        else:
            target = posixpath.join(host.root(), "data", plan.host_folder)
            stats[plan.name] = push_tree(host, plan.source, target, list(ALWAYS_EXCLUDED))
        links += [target, posixpath.join(layout.work, plan.link)]
    if links:
        host.run(["sh", "-c", LINK_SCRIPT, "sh", *links]).check()
    return stats
