"""The job file, as pydantic models.

Every model forbids unknown keys: a typo'd field is an error, never silently ignored.
`runner schema` prints `JobSpec.model_json_schema()` so editors can complete job files.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
    computed_field,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_core.core_schema import SerializationInfo

from runner.base.durations import parse_duration
from runner.base.yamlfile import NAME_PATTERN, StrictModel
from runner.jobs.notifyspec import Notify

ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

# Globs are relative to the job's working directory on the host.
DEFAULT_ARTIFACTS: dict[str, list[str]] = {
    "weights": ["runs/**/weights/*.pt"],
    "results": ["runs/**/results.csv", "runs/**/results.txt", "runs/**/*.yaml"],
    "logs": ["runs/**/events.out.tfevents.*"],
}
# Each sync lists the whole set on the host (hashing what changed): more often than this is a busy loop.
MIN_SYNC_SECONDS = 10.0
WHOLE_SETS = "whole_artifact_sets"  # the serialization context key of stored_document
LOST_AFTER_S = 300.0  # a rented instance's SSH silent this long while the API says running: it is lost


def _one_or_many(value: object) -> object:
    """`run: python train.py` and `run: [a, b]` both mean a list of shell lines."""
    return [value] if isinstance(value, str) else value


def _scalar_as_text(value: object) -> object:
    """`EPOCHS: 100` in YAML is an int; the environment only holds text.

    Booleans stay an error: `yes` becoming "True", "true" or "1" is a guess the user should make.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


def _stays_inside(glob: str) -> str:
    path = PurePosixPath(glob)
    if not glob or path.is_absolute() or ".." in path.parts:
        raise ValueError(f"'{glob}' must stay inside the workdir (relative, no '..')")
    return glob


def _sync_interval(value: object) -> float:
    """`sync_every: 10m` (or plain seconds), no more often than MIN_SYNC_SECONDS."""
    seconds = parse_duration(value)
    if seconds < MIN_SYNC_SECONDS:
        raise ValueError(f"'{value}' is too often: each sync lists the set on the host; at least {MIN_SYNC_SECONDS:g}s")
    return seconds


ShellLines = Annotated[list[str], BeforeValidator(_one_or_many)]
Globs = Annotated[list[Annotated[str, AfterValidator(_stays_inside)]], BeforeValidator(_one_or_many)]
EnvValue = Annotated[str, BeforeValidator(_scalar_as_text)]
SyncInterval = Annotated[
    float,
    BeforeValidator(_sync_interval),
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": r"^\s*[0-9.]+\s*[smhSMH]?\s*$"}, {"type": "number"}]}),
]


def _duration(value: object) -> float:
    return parse_duration(value)


Duration = Annotated[float, BeforeValidator(_duration)]
# A duration a person writes in the job file ("2h", "90m"): the schema says so, for editors.
LongDuration = Annotated[
    float,
    BeforeValidator(_duration),
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": r"^\s*[0-9.]+\s*[smhSMH]?\s*$"}, {"type": "number"}]}),
]


class MonitorSettings(StrictModel):
    """What the host's monitor watches for (seen in `runner status`)."""

    interval: Duration = Field(10.0, ge=1, description="how often the monitor takes a snapshot (10s, 1m)")
    stalled_after: Duration = Field(900.0, description="alert when the training prints nothing for this long")
    gpu_temp_limits: dict[Literal["edge", "junction", "mem"], float] = Field(
        default_factory=dict,
        description="alert at these GPU temperatures, in °C (default edge 90, junction 100, mem 95)",
    )
    min_free_disk: float = Field(
        0.05, ge=0, lt=1, description="alert when less than this fraction of the disk is free (at most 10 GiB)"
    )


class ArtifactSet(StrictModel):
    """A named glob set in its long form, for what the short form (a list of globs) cannot say."""

    paths: Globs | None = Field(None, description="globs, relative to the workdir; weights/results/logs have defaults")
    sync_every: SyncInterval | None = Field(
        None,
        description=f"fetch the set in the background while the job runs, at this interval (30s, 10m, 1h;"
        f" at least {MIN_SYNC_SECONDS:g}s), and once more when it ends",
    )
    dest: str | None = Field(
        None,
        min_length=1,
        description="where sync_every fetches to, relative to the job file (default: artifacts/JOB_ID where"
        " `runner submit` ran, as `runner fetch`)",
    )

    @model_validator(mode="after")
    def _dest_needs_sync(self) -> ArtifactSet:
        if self.dest is not None and self.sync_every is None:
            raise ValueError("dest is only used with sync_every (`runner fetch --dest` sets it for one fetch)")
        return self


class ArtifactSync(StrictModel):
    """What the background sync of one set does, as stored with the job (`artifact_sync`)."""

    every_s: float
    dest: str | None  # as written in the job file: relative to it; None: artifacts/JOB_ID


def _artifact_form(value: Any) -> str:
    return "set" if isinstance(value, dict) else "globs"


# `weights: [globs]` or `weights: {paths: [...], sync_every: 10m}`. The tag picks the form by the YAML
# shape, so an error speaks of that form only (specfile drops the tag from the error's location).
ArtifactEntry = Annotated[
    Annotated[Globs, Tag("globs")] | Annotated[ArtifactSet, Tag("set")], Discriminator(_artifact_form)
]


IMAGE_BUILDS = ("auto", "rocm52", "cu128")
# A reference as `docker pull` takes it: [registry[:port]/]name[:tag][@digest]; no spaces, no leading '-'.
IMAGE_REFERENCE = r"^[a-z0-9][a-z0-9._/:@-]*$"


class ImageBuild(StrictModel):
    """One of runner's Dockerfiles, built on the host (tagged by a hash of its content: never rebuilt
    unchanged), with build arguments."""

    build: Literal["auto", "rocm52", "cu128"] = Field(
        "auto", description="auto picks by the host's GPU: rocm52 for AMD, cu128 for NVIDIA and hosts without a GPU"
    )
    args: dict[str, EnvValue] = Field(
        default_factory=dict, description="docker build arguments, e.g. BASE_IMAGE, INSTALL_FRAMEWORK: '0'"
    )

    @field_validator("args")
    @classmethod
    def _arg_names(cls, args: dict[str, str]) -> dict[str, str]:
        for key in args:
            if not re.match(ENV_NAME_PATTERN, key):
                raise ValueError(f"'{key}' is not a valid build argument name")
        return args


def _image_reference(value: str) -> str:
    if value not in IMAGE_BUILDS and not re.match(IMAGE_REFERENCE, value):
        raise ValueError(f"'{value}' is neither auto, rocm52, cu128 nor an image reference (name[:tag])")
    return value


def _image_form(value: Any) -> str:
    return "build" if isinstance(value, dict) else "reference"


# `image: cu128` or `image: {build: cu128, args: {...}}`: picked by the YAML shape, as ArtifactEntry.
ImageChoice = Annotated[
    Annotated[str, AfterValidator(_image_reference), Tag("reference")] | Annotated[ImageBuild, Tag("build")],
    Discriminator(_image_form),
]


class TensorBoard(StrictModel):
    logdir: str = Field("runs", description="TensorBoard log directory, relative to the workdir")
    port: int = Field(6006, ge=1, le=65535, description="port TensorBoard serves on, on the host's loopback")


class Dataset(StrictModel):
    """A dataset folder synced once per host to its shared data directory, and linked into each job."""

    path: str = Field(description="the folder on this machine, relative to the job file")
    link: Annotated[str, AfterValidator(_stays_inside)] | None = Field(
        None, description="where the job sees it, relative to the workdir (default: where it is, or datasets/NAME)"
    )


def _dataset_shorthand(value: object) -> object:
    """`coco320: ../datasets/coco320` means `coco320: {path: ../datasets/coco320}`."""
    return {"path": value} if isinstance(value, str) else value


class Resources(StrictModel):
    """What the job needs from a host; rented hosts are chosen by it."""

    gpu: str | None = Field(None, description='GPU model, e.g. "RTX 5090"')
    num_gpus: int = Field(1, ge=0)
    min_vram_gb: float | None = Field(None, gt=0)
    max_price: float | None = Field(None, gt=0, description="highest price per hour, in $")
    max_cost: float | None = Field(None, gt=0, description="stop the job when it has cost this much, in $")
    max_duration: LongDuration | None = Field(
        None, description="stop the job when it has run this long (2h, 90m, 45s), enforced on its host by the monitor"
    )
    disk_gb: float = Field(50, gt=0)
    interruptible: bool = False


class RetryPolicy(StrictModel):
    """What a job on a rented host does when its instance is interrupted or lost: rent another, push
    the last fetched checkpoint, and run `resume` instead of `run`."""

    on: list[Literal["interrupted", "lost"]] = Field(description="interrupted: the instance exited or went offline;"
                                                     " lost: SSH gone for longer than the grace period")  # fmt: skip
    max: int = Field(1, ge=1, le=20, description="how many new instances at most")
    lost_after: Duration = Field(LOST_AFTER_S, ge=10, description="the grace period: SSH silent this long"
                                 " (5m, 300) while vast.ai says the instance runs, and it counts as lost")  # fmt: skip

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, data: Any) -> Any:
        # YAML 1.1 reads a bare `on:` key as the boolean true: `retry: {on: [lost]}` must still mean `on`.
        if isinstance(data, dict) and True in data and "on" not in data:
            data = {("on" if key is True else key): value for key, value in data.items()}
        return data


class JobSpec(StrictModel):
    """A training job: what to run, where, and what to bring back."""

    name: str = Field(pattern=NAME_PATTERN, description="job name: letters, digits, '-' and '_'")
    host: str = Field("local", description="host name: local, a host from hosts.yaml, or vast")
    workdir: str | None = Field(None, description="folder synced to the host; default: the job file's folder")
    image: ImageChoice | None = Field(
        None,
        description="container image: auto, rocm52 or cu128 (runner's Dockerfiles, built on the host),"
        " {build: ..., args: {...}}, or a reference used as it is; none runs on the host itself",
    )
    conv_backend: Literal["native", "im2col", "miopen"] | None = Field(
        None,
        description="convolutions in the ROCm image: native (PyTorch's own kernels, MIOpen off), im2col (a pure-PyTorch"
        " Conv2d) or miopen; default native on RDNA1 (gfx101x), miopen on other AMD GPUs",
    )
    setup: ShellLines = Field(default_factory=list, description="shell lines run before `run`")
    run: ShellLines = Field(description="shell lines that train; the job fails if one fails")
    env: dict[str, EnvValue] = Field(default_factory=dict, description="environment for setup and run")
    datasets: dict[str, Annotated[Dataset, BeforeValidator(_dataset_shorthand)]] = Field(
        default_factory=dict, description="dataset folders, shared by the jobs on a host and synced only when changed"
    )
    dataset: Annotated[str, AfterValidator(_stays_inside)] | None = Field(
        None,
        description="the training's data YAML (ultralytics or YOLOv7), relative to the workdir: `runner check` and"
        " submit's preflight check its labels and images before any training starts",
    )
    artifacts: dict[str, ArtifactEntry] = Field(
        default_factory=dict,
        description="named glob sets, relative to the workdir (weights/results/logs have defaults): a list of globs,"
        " or {paths, sync_every, dest} to fetch the set in the background while the job runs",
    )
    tensorboard: TensorBoard | None = Field(default_factory=TensorBoard)
    progress: Literal["auto", "ultralytics", "yolov7", "tqdm", "none"] = Field(
        "auto", description="the progress format the training prints"
    )
    resources: Resources = Field(default_factory=Resources)
    teardown: Literal["on_success", "on_exit", "never"] = Field(
        "on_exit",
        description="rented hosts: destroy the instance after the final fetch when the job succeeded (on_success),"
        " whenever it ends (on_exit), or never",
    )
    retry: RetryPolicy | None = Field(
        None, description="rented hosts: rent again when the instance is interrupted or lost"
    )
    resume: ShellLines = Field(
        default_factory=list,
        description="shell lines that continue from the last checkpoint, run instead of `run` on retry",
    )
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    # exclude: the URLs are secrets, in no dump (spec.json, --json, the container plan) but the store's.
    notify: Notify | None = Field(
        None, exclude=True, description="notifications (apprise URLs and events); default: settings.yaml's notify"
    )

    @field_validator("run")
    @classmethod
    def _run_not_empty(cls, lines: list[str]) -> list[str]:
        if not any(line.strip() for line in lines):
            raise ValueError("needs at least one command")
        return lines

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        for key in env:
            if not re.match(ENV_NAME_PATTERN, key):
                raise ValueError(f"'{key}' is not a valid environment variable name")
        return env

    @field_validator("artifacts", "datasets")
    @classmethod
    def _names(cls, named: dict[str, object]) -> dict[str, object]:
        for name in named:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"'{name}' is not a valid name (letters, digits, '-' and '_')")
        return named

    @field_validator("artifacts")
    @classmethod
    def _own_sets_have_paths(cls, sets: dict[str, object]) -> dict[str, object]:
        for name, entry in sets.items():
            if isinstance(entry, ArtifactSet) and entry.paths is None and name not in DEFAULT_ARTIFACTS:
                # ctx "entry" points the error at this set's line, not at `artifacts:` (see specfile).
                raise PydanticCustomError(
                    "no_default_paths",
                    "needs paths: only {defaults} have default globs",
                    {"entry": name, "defaults": "/".join(DEFAULT_ARTIFACTS)},
                )
        return sets

    @model_validator(mode="after")
    def _default_artifact_sets(self) -> JobSpec:
        # Every set in its long form, its globs filled in: a default set named without paths keeps them.
        merged: dict[str, ArtifactSet] = {}
        for name, entry in {**DEFAULT_ARTIFACTS, **self.artifacts}.items():
            if not isinstance(entry, ArtifactSet):
                entry = ArtifactSet(paths=entry)
            elif entry.paths is None:
                entry = entry.model_copy(update={"paths": DEFAULT_ARTIFACTS[name]})
            merged[name] = entry
        object.__setattr__(self, "artifacts", merged)
        return self

    # In the host's spec.json and --json documents, `artifacts` stays a name -> list of globs mapping;
    # the background syncs are a mapping of their own beside it. The store keeps every set whole
    # (`stored_document`), so that validating what it kept gives this very spec back.
    @field_serializer("artifacts")
    def _globs_only(self, sets: dict[str, ArtifactSet], info: SerializationInfo) -> dict[str, Any]:
        if info.context and info.context.get(WHOLE_SETS):
            return {name: entry.model_dump(mode="json") for name, entry in sets.items()}
        return {name: list(entry.paths or []) for name, entry in sets.items()}

    def artifact_globs(self, name: str) -> list[str] | None:
        """The globs of the set `name`; None where the job has no such set."""
        entry = self.artifacts.get(name)
        if entry is None:
            return None
        return list(entry.paths or []) if isinstance(entry, ArtifactSet) else list(entry)

    def stored_document(self) -> dict[str, Any]:
        """The spec as the store keeps it: JobSpec.model_validate of it gives this spec back."""
        document = self.model_dump(mode="json", context={WHOLE_SETS: True}, exclude={"artifact_sync"})
        document["notify"] = self.notify.model_dump(mode="json") if self.notify else None
        return document

    @computed_field  # type: ignore[prop-decorator]
    @property
    def artifact_sync(self) -> dict[str, ArtifactSync]:
        """The sets fetched in the background while the job runs, by name."""
        return {
            name: ArtifactSync(every_s=entry.sync_every, dest=entry.dest)
            for name, entry in self.artifacts.items()
            if isinstance(entry, ArtifactSet) and entry.sync_every is not None
        }
