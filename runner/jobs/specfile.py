"""Reading job files: YAML with line/column marks, so every error points at its place
(the reading and the errors are runner.base.yamlfile's, shared with hosts.yaml and data YAML).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runner.base.errors import SpecError
from runner.base.yamlfile import MAX_SPEC_BYTES, FieldPath, Marks, dotted, load_yaml_mapping, validate
from runner.jobs.settings import load_settings
from runner.jobs.spec import JobSpec
from runner.jobs.state import Job

__all__ = [
    "MAX_SPEC_BYTES",
    "FieldPath",
    "LoadedJob",
    "Marks",
    "dotted",
    "load_job",
    "load_yaml_mapping",
    "stored_job",
    "validate",
]


@dataclass(frozen=True)
class LoadedJob:
    """A validated job spec with the file it came from, for errors found later (e.g. workdir missing)."""

    spec: JobSpec
    path: Path
    marks: Marks
    resolved_workdir: Path | None = None  # a stored job's, as submit resolved it

    def error(self, field_path: FieldPath, message: str) -> SpecError:
        mark = self.marks.nearest_value(field_path)
        return SpecError(f"{self.path}:{mark.line}:{mark.column}: {dotted(field_path)}: {message}")

    @property
    def workdir(self) -> Path:
        if self.resolved_workdir is not None:
            return self.resolved_workdir
        base = self.path.resolve().parent
        return (base / self.spec.workdir).resolve() if self.spec.workdir else base


def load_job(path: Path) -> LoadedJob:
    data, marks = load_yaml_mapping(path, what="job file")
    spec: JobSpec = validate(JobSpec, data, marks, path)
    if spec.notify is None:  # settings.yaml's default, copied in: it is the job's from now on
        spec = spec.model_copy(update={"notify": load_settings().notify})
    return LoadedJob(spec=spec, path=path, marks=marks)


def stored_job(job: Job, spec: JobSpec | None = None) -> LoadedJob:
    """A job as the store keeps it (or with spec in place of its own), for the steps that place it on a
    host again: its paths as submit resolved them, whatever became of its file."""
    return LoadedJob(spec or job.spec, Path(job.job_file), Marks(), Path(job.resolved.workdir))
