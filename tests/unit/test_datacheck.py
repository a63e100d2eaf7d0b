"""The dataset check (runner/hostside/datacheck.py and its modules), on small datasets written per test:
both data YAML styles, every kind of problem, and the counts a clean dataset must give."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runner.hostside import datacheck, imageheader, labelfile, splitscan
from runner.jobs.specfile import load_job
from runner.pipeline.preflight import check_here
from tests.datasets import IMAGE_BYTES, bmp_bytes, jpeg_bytes, png_bytes, ultralytics_yaml, webp_bytes, write_split

BOX = "0.5 0.5 0.1 0.1"


def check_job(workdir: Path, dataset: str, extra: str = "") -> dict[str, Any]:
    """The report `runner check` makes for a job in workdir naming this data YAML."""
    job = workdir / "job.yaml"
    job.write_text(f"name: t\nrun: python train.py\ndataset: {dataset}\n{extra}")
    return check_here(load_job(job))


def problems(report: dict[str, Any], split: str = "train") -> dict[str, int]:
    return {kind: entry["count"] for kind, entry in report["splits"][split]["problems"].items()}


def test_a_clean_ultralytics_dataset_passes_with_its_counts(tmp_path: Path) -> None:
    write_split(tmp_path / "data", "train", {"a": f"0 {BOX}\n1 {BOX}\n", "b": f"2 {BOX}\n", "c": None, "d": ""})
    write_split(tmp_path / "data", "val", {"e": f"1 {BOX}\n"}, suffix="png")
    ultralytics_yaml(tmp_path / "data", ["cat", "dog", "bird"])

    report = check_job(tmp_path, "data/data.yaml")

    assert (report["ok"], report["errors"], report["warnings"]) == (True, 0, 0)
    assert (report["nc"], report["names"]) == (3, ["cat", "dog", "bird"])
    train, val = report["splits"]["train"], report["splits"]["val"]
    assert {key: train[key] for key in ("images", "labels", "backgrounds", "empty_labels", "instances")} == {
        "images": 4, "labels": 3, "backgrounds": 1, "empty_labels": 1, "instances": 3}  # fmt: skip
    assert train["instances_per_class"] == [1, 1, 1]
    assert (val["images"], val["labels"], val["instances"], val["instances_per_class"]) == (1, 1, 1, [0, 1, 0])
    assert train["sources"] == ["data/images/train"] and train["problems"] == {}


def test_names_as_a_mapping_with_a_matching_nc(tmp_path: Path) -> None:
    write_split(tmp_path, "train", {"a": f"1 {BOX}\n"})
    write_split(tmp_path, "val", {"b": f"0 {BOX}\n"})
    ultralytics_yaml(tmp_path, {0: "cat", 1: "dog"}, extra="nc: 2\n")
    report = check_job(tmp_path, "data.yaml")
    assert report["ok"] and report["names"] == ["cat", "dog"]
    assert report["splits"]["train"]["instances_per_class"] == [0, 1]


def test_nc_disagreeing_with_names_is_an_error_at_the_nc_line(tmp_path: Path) -> None:
    write_split(tmp_path, "train", {"a": f"0 {BOX}\n"})
    write_split(tmp_path, "val", {"b": f"0 {BOX}\n"})
    ultralytics_yaml(tmp_path, ["cat", "dog"], extra="nc: 3\n")  # nc on line 4
    report = check_job(tmp_path, "data.yaml")
    assert not report["ok"] and report["errors"] == 1
    first = report["problems"]["nc_names_mismatch"]["first"][0]
    assert (first["file"], first["line"]) == ("data.yaml", 4)
    assert report["nc"] == 2  # names wins, as in ultralytics: classes are checked against it


def test_a_yolov7_yaml_with_image_lists_relative_to_the_workdir(tmp_path: Path) -> None:
    coco = tmp_path / "coco"
    write_split(coco, "train2017", {"a": f"0 {BOX}\n", "b": f"1 {BOX}\n1 0.2 0.2 0.1 0.1\n", "c": None})
    write_split(coco, "val2017", {"d": f"1 {BOX}\n"})
    (coco / "train2017.txt").write_text(
        "./images/train2017/a.jpg\ncoco/images/train2017/b.jpg\n./images/train2017/c.jpg\n./images/train2017/gone.jpg\n"
    )
    (coco / "val2017.txt").write_text("./images/val2017/d.jpg\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "coco.yaml").write_text(
        "# YOLOv7: paths relative to the working directory\ntrain: ./coco/train2017.txt\nval: ./coco/val2017.txt\n"
        "test: ./coco/test-dev2017.txt\nnc: 2\nnames: ['person', 'bicycle']\n"
    )

    report = check_job(tmp_path, "data/coco.yaml")

    train = report["splits"]["train"]
    assert (train["images"], train["labels"], train["backgrounds"], train["instances"]) == (4, 2, 1, 3)
    assert train["instances_per_class"] == [1, 2] and train["sources"] == ["coco/train2017.txt"]
    missing = train["problems"]["image_missing"]
    assert missing["count"] == 1 and missing["first"][0]["file"] == "coco/images/train2017/gone.jpg"
    assert report["splits"]["test"]["problems"]["split_missing"]["severity"] == "warning"  # unused until tested on
    assert (report["errors"], report["warnings"]) == (1, 1)


def test_a_class_id_equal_to_nc_is_named_by_file_and_line(tmp_path: Path) -> None:
    write_split(tmp_path, "train", {"a": f"0 {BOX}\n", "x": f"0 {BOX}\n1 {BOX}\n2 {BOX}\n0 0.4 0.4 0.2 0.2\n"})
    write_split(tmp_path, "val", {"b": f"1 {BOX}\n"})
    ultralytics_yaml(tmp_path, ["cat", "dog"])
    report = check_job(tmp_path, "data.yaml")
    assert (report["ok"], report["errors"]) == (False, 1)
    entry = report["splits"]["train"]["problems"]["class_out_of_range"]
    assert entry["count"] == 1 and entry["severity"] == "error"
    assert (entry["first"][0]["file"], entry["first"][0]["line"]) == ("labels/train/x.txt", 3)
    assert datacheck.first_errors(report)[0]["file"] == "labels/train/x.txt"
    assert report["splits"]["train"]["instances"] == 4  # the other lines of the file still count


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("0 1.2 0.5 0.1 0.1", "coordinate_out_of_range"),
        ("0 -0.1 0.5 0.1 0.1", "coordinate_out_of_range"),
        ("0 nan 0.5 0.1 0.1", "coordinate_out_of_range"),
        ("0 0.5 0.5 0 0.1", "box_not_positive"),
        ("0 0.5 0.5 0.1 -0.0", "box_not_positive"),
        ("0 0.5 0.5 0.1", "label_columns"),
        ("0 0.5 0.5 0.1 0.1 0.2", "label_columns"),
        ("0 0.5 x 0.1 0.1", "label_not_a_number"),
        ("1.5 0.5 0.5 0.1 0.1", "class_not_integer"),
        ("-1 0.5 0.5 0.1 0.1", "class_out_of_range"),
        ("3 0.5 0.5 0.1 0.1", "class_out_of_range"),
        ("0 0.1 0.1 0.9 0.1 0.5 1.3", "coordinate_out_of_range"),
        ("0 0.1 0.1 0.2 0.1 0.2 0.2 0.1", "label_columns"),  # a polygon needs x, y pairs
        ("0 0.1 0.1 0.5 0.1 0.9 0.1", "box_not_positive"),
        (f"0 {BOX}", "duplicate_line"),
    ],
)
def test_a_bad_line_is_found_at_its_line(line: str, kind: str) -> None:
    per_class = [0, 0, 0]
    instances, found = labelfile.check_text(f"0 {BOX}\n{line}\n", 3, per_class)
    assert [(problem[0], problem[1]) for problem in found] == [(kind, 2)]
    assert instances == 1 and per_class == [1, 0, 0]


def test_polygons_and_whole_number_classes_are_instances() -> None:
    per_class = [0, 0]
    text = "0 0.1 0.1 0.9 0.1 0.5 0.9\n1 0.2 0.2 0.4 0.2 0.4 0.4 0.2 0.4\n1.0 0.5 0.5 0.2 0.2\n\n"
    assert labelfile.check_text(text, 2, per_class) == (3, []) and per_class == [1, 2]


def test_pose_lines_need_their_keypoints() -> None:
    per_class = [0]
    instances, found = labelfile.check_text(f"0 {BOX} 0.5 0.5 2 0.6 0.6 1\n0 {BOX}\n", 1, per_class, keypoint_numbers=6)
    assert [(kind, line) for kind, line, _ in found] == [("label_columns", 2)] and instances == 1


def test_duplicates_labels_without_images_and_backgrounds_are_warnings_or_counts(tmp_path: Path) -> None:
    write_split(tmp_path, "train", {"a": f"0 {BOX}\n0 {BOX}\n0 {BOX}\n1 {BOX}\n", "b": None, "c": f"1 {BOX}\n"})
    write_split(tmp_path, "val", {"d": f"0 {BOX}\n"})
    (tmp_path / "labels" / "train" / "orphan.txt").write_text(f"0 {BOX}\n")
    ultralytics_yaml(tmp_path, ["cat", "dog"])
    report = check_job(tmp_path, "data.yaml")
    assert (report["ok"], report["errors"], report["warnings"]) == (True, 0, 3)
    assert problems(report) == {"duplicate_line": 2, "label_without_image": 1}
    train = report["splits"]["train"]
    assert (train["images"], train["labels"], train["backgrounds"], train["instances"]) == (3, 2, 1, 3)
    assert train["problems"]["label_without_image"]["first"][0]["file"] == "labels/train/orphan.txt"


def test_corrupt_and_tiny_images_are_errors_and_their_labels_skipped(tmp_path: Path) -> None:
    write_split(
        tmp_path, "train", {"good": f"0 {BOX}\n", "text": f"0 {BOX}\n", "tiny": f"0 {BOX}\n", "cut": f"0 {BOX}\n"}
    )
    write_split(tmp_path, "val", {"v": f"0 {BOX}\n"})
    folder = tmp_path / "images" / "train"
    (folder / "text.jpg").write_text("<html>not an image</html>")
    (folder / "tiny.jpg").write_bytes(png_bytes(5, 5))  # a PNG named .jpg is fine; 5 pixels is not
    (folder / "cut.jpg").write_bytes(jpeg_bytes()[:30])
    ultralytics_yaml(tmp_path, ["cat"])
    report = check_job(tmp_path, "data.yaml")
    entry = report["splits"]["train"]["problems"]["image_unreadable"]
    assert entry["count"] == 3 and report["errors"] == 3
    assert sorted(offender["file"] for offender in entry["first"]) == [
        "images/train/cut.jpg",
        "images/train/text.jpg",
        "images/train/tiny.jpg",
    ]
    assert report["splits"]["train"]["labels"] == 1  # only the good image's label was read


def test_a_missing_split_is_an_error_naming_where_it_looked_and_a_missing_test_a_warning(tmp_path: Path) -> None:
    write_split(tmp_path, "train", {"a": f"0 {BOX}\n"})
    ultralytics_yaml(tmp_path, ["cat"], extra="test: images/test\n")
    report = check_job(tmp_path, "data.yaml")
    val = report["splits"]["val"]["problems"]["split_missing"]
    assert val["severity"] == "error" and "'images/val' is not there" in val["first"][0]["detail"]
    assert val["first"][0]["line"] == 3  # the val: line of the YAML
    assert report["splits"]["test"]["problems"]["split_missing"]["severity"] == "warning"
    assert report["errors"] == 1


def test_a_dataset_linked_into_the_workdir_is_checked_where_it_lies_and_shown_as_linked(tmp_path: Path) -> None:
    data, work = tmp_path / "data" / "toy", tmp_path / "work"
    write_split(data, "train", {"a": f"0 {BOX}\n", "b": f"5 {BOX}\n"})
    write_split(data, "val", {"c": f"0 {BOX}\n"})
    (data / "toy.yaml").write_text("train: images/train\nval: images/val\nnames: [cat]\n")  # no path: the YAML's folder
    work.mkdir()
    report = check_job(work, "datasets/toy/toy.yaml", extra="datasets:\n  toy: ../data/toy\n")
    entry = report["splits"]["train"]["problems"]["class_out_of_range"]
    assert (entry["first"][0]["file"], entry["first"][0]["line"]) == ("datasets/toy/labels/train/b.txt", 1)
    assert report["splits"]["train"]["sources"] == ["datasets/toy/images/train"]


def test_worker_processes_give_the_report_one_process_gives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    labels = {f"i{index:02d}": f"{index % 3} {BOX}\n" for index in range(40)}
    labels.update({"i05": f"7 {BOX}\n", "i17": "0 2 2 2 2\n", "i30": None, "i33": ""})
    write_split(tmp_path, "train", labels)
    write_split(tmp_path, "val", {"v": f"0 {BOX}\n"})
    description = {"yaml": "data.yaml", "path": str(tmp_path),
                   "splits": {"train": ["images/train"], "val": ["images/val"]},
                   "nc": 3, "names": None, "lines": {}}  # fmt: skip
    monkeypatch.setattr(splitscan, "CHUNK_IMAGES", 3)
    monkeypatch.setattr(splitscan, "PARALLEL_FROM", 6)
    alone = datacheck.check(description, str(tmp_path), workers=1)
    spread = datacheck.check(description, str(tmp_path), workers=3)
    alone.pop("seconds"), spread.pop("seconds")
    assert alone == spread
    assert problems(alone) == {"class_out_of_range": 1, "coordinate_out_of_range": 1}
    assert alone["splits"]["train"]["instances_per_class"] == [12, 13, 11]


def test_images_are_found_as_the_trainers_glob_finds_them(tmp_path: Path) -> None:
    """Recursively, symlinked folders followed once (a loop ends), hidden files and other files left out."""
    root, elsewhere = tmp_path / "images" / "train", tmp_path / "elsewhere"
    (root / "b_sub").mkdir(parents=True)
    elsewhere.mkdir()
    for path in (
        root / "a.jpg",
        root / "UPPER.JPG",
        root / ".hidden.jpg",
        root / "b_sub" / "c.png",
        elsewhere / "d.jpg",
    ):
        path.write_bytes(IMAGE_BYTES["png"])
    (root / "notes.md").write_text("not an image")
    (root / "linked").symlink_to(elsewhere)
    (root / "loop").symlink_to(root)
    images = splitscan.Images()
    images.add_entry(str(root), splitscan.Locator(str(tmp_path)), splitscan.Tally(1, splitscan.Locator(str(tmp_path))))
    assert [(folder, names) for folder, _, names in images.groups] == [
        (str(root), ["UPPER.JPG", "a.jpg"]),
        (str(root / "b_sub"), ["c.png"]),
        (str(root / "linked"), ["d.jpg"]),
    ]
    assert images.groups[0][1] == str(tmp_path / "labels" / "train")  # the last images/ becomes labels/


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (png_bytes(640, 480), ("png", 640, 480)),
        (jpeg_bytes(1920, 1080), ("jpeg", 1920, 1080)),
        (jpeg_bytes(1920, 1080, exif_bytes=60000), ("jpeg", 1920, 1080)),  # found by seeking past the EXIF block
        (bmp_bytes(300, 200), ("bmp", 300, 200)),
        (webp_bytes(4000, 3000), ("webp", 4000, 3000)),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 \x00\x00\x00\x00\x00\x00\x00\x9d\x01\x2a\x80\x02\xe0\x01", ("webp", 640, 480)),
        (b"RIFF\x00\x00\x00\x00WEBPVP8X\x0a\x00\x00\x00\x00\x00\x00\x00\x7f\x02\x00\xdf\x01\x00", ("webp", 640, 480)),
        (b"II*\x00" + b"\x00" * 60, ("tiff", None, None)),
    ],
    ids=["png", "jpeg", "jpeg-exif", "bmp", "webp-lossless", "webp-lossy", "webp-extended", "tiff"],
)
def test_image_headers_give_format_and_size(tmp_path: Path, data: bytes, expected: tuple) -> None:
    path = tmp_path / "image"
    path.write_bytes(data)
    assert imageheader.read_header(str(path)) == expected


@pytest.mark.parametrize(
    "data",
    [b"", b"GIF89a" + b"\x00" * 30, jpeg_bytes()[:40], png_bytes(20000, 20000), b"\x89PNG\r\n\x1a\n" + b"\x00" * 8],
    ids=["empty", "gif", "jpeg-cut", "png-too-large", "png-no-ihdr"],
)
def test_bad_image_headers_are_refused(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "image"
    path.write_bytes(data)
    with pytest.raises(imageheader.BadImage):
        imageheader.read_header(str(path))


def test_every_header_the_tests_write_reads() -> None:
    assert set(IMAGE_BYTES) == {"png", "jpg", "bmp", "webp"}
