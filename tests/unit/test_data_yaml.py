"""The data YAML as the controller reads it for the dataset check: what the trainers accept is described,
what they would refuse is a one-line error at its place (file:line:col: field: message), and a job file's
bad `dataset:` is one at the job file's line."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.base.errors import SpecError
from runner.jobs.specfile import load_job
from runner.pipeline.placement import plan_datasets
from runner.pipeline.preflight import describe


def describe_yaml(workdir: Path, text: str) -> dict:
    (workdir / "data.yaml").write_text(text)
    job = workdir / "job.yaml"
    job.write_text("name: t\nrun: python train.py\ndataset: data.yaml\n")
    loaded = load_job(job)
    return describe(loaded, plan_datasets(loaded))


def test_an_ultralytics_yaml_is_described_with_its_lines(tmp_path: Path) -> None:
    text = (
        "path: ../datasets/coco8  # dataset root\ntrain: images/train\nval: [images/val, images/val2]\ntest:\n"
        "names:\n  0: person\n  1: 'traffic light'\ndownload: |\n  from pathlib import Path\n  print('x: y')\n"
    )
    description = describe_yaml(tmp_path, text)
    assert description == {
        "yaml": "data.yaml",
        "lines": {"path": 1, "train": 2, "val": 3, "test": 4, "names": 5, "download": 8},
        "path": "../datasets/coco8",
        "splits": {"train": ["images/train"], "val": ["images/val", "images/val2"]},
        "nc": None,
        "names": ["person", "traffic light"],
        "kpt_shape": None,
    }


def test_a_yolov7_yaml_and_ultralytics_validation_key(tmp_path: Path) -> None:
    description = describe_yaml(
        tmp_path, "train: ./coco/train2017.txt\nvalidation: ./coco/val2017.txt\nnc: 2\nnames: [a, b]\n"
    )
    assert description["splits"] == {"train": ["./coco/train2017.txt"], "val": ["./coco/val2017.txt"]}
    assert (description["nc"], description["names"], description["path"]) == (2, ["a", "b"], None)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("val: v\nnames: [a]\n", ":1:1: train: required: both trainers need train and val"),
        ("train: t\nval: {a: 1}\nnames: [a]\n", ":2:1: val: a path (a folder of images or a .txt list of them)"),
        ("train: t\nval: v\nnames:\n  0: a\n  2: b\n", ":3:1: names: class ids must be 0 to 1, each once"),
        ("train: t\nval: v\nnames: {zero: a}\n", ":3:1: names: a mapping's keys are class ids: 0, 1, 2, ..."),
        ("train: t\nval: v\nnc: eighty\n", ":3:1: nc: the number of classes, a whole number from 1 on, not 'eighty'"),
        ("train: t\nval: v\n", ":1:1: (top level): needs names (a list, or a mapping of class id to name) or nc"),
        (
            "train: t\nval: v\nnames: [a]\nkpt_shape: [17]\n",
            ":4:1: kpt_shape: [keypoints, values per keypoint], e.g. [17, 3]",
        ),
        ("train: t\nval: v\nnames: [a\n", ": invalid YAML: "),
    ],
    ids=["no-train", "val-mapping", "names-gap", "names-keys", "nc-text", "no-classes", "kpt-shape", "bad-yaml"],
)
def test_a_malformed_data_yaml_is_one_line_at_its_place(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(SpecError) as raised:
        describe_yaml(tmp_path, text)
    assert str(raised.value).startswith(str(tmp_path / "data.yaml")) and error in str(raised.value)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (
            "../elsewhere/data.yaml",
            ":3:10: dataset: '../elsewhere/data.yaml' must stay inside the workdir (relative, no '..')",
        ),
        ("/abs/data.yaml", ":3:10: dataset: '/abs/data.yaml' must stay inside the workdir (relative, no '..')"),
        ("missing.yaml", ":3:10: dataset: 'missing.yaml' is not a file in the workdir"),
    ],
)
def test_a_bad_dataset_value_in_the_job_file_is_one_line_at_its_place(tmp_path: Path, value: str, error: str) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(f"name: t\nrun: python train.py\ndataset: {value}\n")
    with pytest.raises(SpecError) as raised:
        loaded = load_job(job)
        describe(loaded, plan_datasets(loaded))
    assert str(raised.value).startswith(f"{job}{error}")
