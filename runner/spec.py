"""The job file, as pydantic models.

Every model forbids unknown keys: a typo'd field is an error, never silently ignored.
`runner schema` prints `JobSpec.model_json_schema()` so editors can complete job files.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

# Globs are relative to the job's working directory on the host.
DEFAULT_ARTIFACTS: dict[str, list[str]] = {
    "weights": ["runs/**/weights/*.pt"],
    "results": ["runs/**/results.csv", "runs/**/results.txt", "runs/**/*.yaml"],
    "logs": ["runs/**/events.out.tfevents.*"],
}


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


ShellLines = Annotated[list[str], BeforeValidator(_one_or_many)]
Globs = Annotated[list[Annotated[str, AfterValidator(_stays_inside)]], BeforeValidator(_one_or_many)]
EnvValue = Annotated[str, BeforeValidator(_scalar_as_text)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    disk_gb: float = Field(50, gt=0)
    interruptible: bool = False


class JobSpec(StrictModel):
    """A training job: what to run, where, and what to bring back."""

    name: str = Field(pattern=NAME_PATTERN, description="job name: letters, digits, '-' and '_'")
    host: str = Field("local", description="host name: local, a host from hosts.yaml, or vast")
    workdir: str | None = Field(None, description="folder synced to the host; default: the job file's folder")
    image: str | None = Field(
        None, description="container image: auto, rocm52, cu128 or a reference; none runs on the host itself"
    )
    setup: ShellLines = Field(default_factory=list, description="shell lines run before `run`")
    run: ShellLines = Field(description="shell lines that train; the job fails if one fails")
    env: dict[str, EnvValue] = Field(default_factory=dict, description="environment for setup and run")
    datasets: dict[str, Annotated[Dataset, BeforeValidator(_dataset_shorthand)]] = Field(
        default_factory=dict, description="dataset folders, shared by the jobs on a host and synced only when changed"
    )
    artifacts: dict[str, Globs] = Field(
        default_factory=dict, description="named glob sets, relative to the workdir; weights/results/logs have defaults"
    )
    tensorboard: TensorBoard | None = Field(default_factory=TensorBoard)
    progress: Literal["auto", "ultralytics", "yolov7", "tqdm", "none"] = Field(
        "auto", description="the progress format the training prints"
    )
    resources: Resources = Field(default_factory=Resources)

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

    @model_validator(mode="after")
    def _default_artifact_sets(self) -> "JobSpec":
        merged = {**DEFAULT_ARTIFACTS, **self.artifacts}
        object.__setattr__(self, "artifacts", merged)
        return self
