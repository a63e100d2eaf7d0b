"""The build context runner sends to a host, and the tag named by its hash: the same content gives
the same tag whatever the files' times or owners; any change of a file or a build argument, another."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path

from runner.images.build import context_files, context_root, context_tar, image_tag

REPO = Path(__file__).resolve().parents[2]


def copy_of_context(target: Path) -> Path:
    for name in ("Dockerfile.rocm52", "Dockerfile.cu128"):
        shutil.copy(REPO / name, target / name)
    shutil.copytree(REPO / "images", target / "images", ignore=shutil.ignore_patterns("__pycache__"))
    return target


def test_the_context_is_the_dockerfile_and_the_folder_it_copies() -> None:
    names = [path.as_posix() for path in context_files(context_root(), "rocm52")]
    assert names[0] == "Dockerfile.rocm52" and "Dockerfile.cu128" not in names
    assert {"images/runner_torch/sitecustomize.py", "images/runner_torch/runner_conv.py"} <= set(names)
    assert all(name == "Dockerfile.rocm52" or name.startswith("images/") for name in names)
    with tarfile.open(fileobj=io.BytesIO(context_tar(context_root(), "rocm52"))) as tar:
        members = tar.getnames()
    assert members == names


def test_the_tag_follows_the_content_not_the_files_times(tmp_path: Path) -> None:
    root = copy_of_context(tmp_path)
    tag = image_tag("cu128", context_tar(root, "cu128"), {})
    assert tag.startswith("runner-cu128:") and len(tag.split(":")[1]) == 16
    hook = root / "images" / "runner_torch" / "sitecustomize.py"
    os.utime(hook, (0, 1_000_000_000))
    assert image_tag("cu128", context_tar(root, "cu128"), {}) == tag
    assert image_tag("cu128", context_tar(root, "cu128"), {"INSTALL_FRAMEWORK": "0"}) != tag
    hook.write_text(hook.read_text() + "\n# changed\n")
    assert image_tag("cu128", context_tar(root, "cu128"), {}) != tag
    (root / "Dockerfile.rocm52").write_text("FROM scratch\n")  # another Dockerfile: not in this context
    hook.write_text(hook.read_text().removesuffix("\n# changed\n"))
    assert image_tag("cu128", context_tar(root, "cu128"), {}) == tag
