"""Building runner's images on a job's host, through the Docker SDK, from a context sent from here.

The context is the Dockerfile and the folder it copies (images/), packed into a tar with fixed
owners, modes and times, so its sha256 depends on the content only. The tag is that hash with
the build arguments folded in: an unchanged Dockerfile, context and arguments name an image the
host already has, and nothing is built or sent. The build log streams to the user as it comes.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from runner.base.errors import RunnerError
from runner.hosts.base import Host
from runner.images.plan import ImagePlan

TAG_PREFIX = "runner-"  # runner-rocm52:<hash>, runner-cu128:<hash>
HASH_CHARS = 16
CONTEXT_FOLDER = "images"  # what the Dockerfiles COPY, relative to the context's root

Log = Callable[[str], None]


def context_root() -> Path:
    """Where the Dockerfiles and images/ are: inside the installed package (setup.py copies them
    there), or this checkout's root when runner runs from its source tree."""
    packaged = Path(str(resources.files("runner"))) / "imagecontext"
    if (packaged / "Dockerfile.cu128").is_file():
        return packaged
    checkout = Path(__file__).resolve().parents[2]  # runner/images/build.py -> the checkout
    if (checkout / "Dockerfile.cu128").is_file():
        return checkout
    raise RunnerError("runner's Dockerfiles are missing from this installation; reinstall runner")


def context_files(root: Path, build: str) -> list[Path]:
    """The files of the build of Dockerfile.<build>, relative to root, in a fixed order."""
    files = [Path(f"Dockerfile.{build}")]
    folder = root / CONTEXT_FOLDER
    files += sorted(
        path.relative_to(root)
        for path in folder.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    )
    return files


def context_tar(root: Path, build: str) -> bytes:
    """The build context as a tar whose bytes depend on the files' content and paths only."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for relative in context_files(root, build):
            data = (root / relative).read_bytes()
            info = tarfile.TarInfo(relative.as_posix())
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def image_tag(build: str, context: bytes, build_args: dict[str, str]) -> str:
    digest = hashlib.sha256(context)
    digest.update(json.dumps(build_args, sort_keys=True).encode())
    return f"{TAG_PREFIX}{build}:{digest.hexdigest()[:HASH_CHARS]}"


def ensure_image(host: Host, plan: ImagePlan, log: Log) -> tuple[str, bool]:
    """The reference to run for plan on host, built there first when the host lacks it.
    Returns (reference, built): built is False when the host already had the image."""
    if plan.build is None:
        assert plan.reference is not None
        return plan.reference, False
    from runner.hosts.dockerlink import docker_client

    context = context_tar(context_root(), plan.build)
    tag = image_tag(plan.build, context, plan.build_args)
    with docker_client(host) as client:
        if _has_image(client, tag):
            log(f"image {tag} is on {host.name} already: not rebuilt")
            return tag, False
        log(f"building {tag} on {host.name} (Dockerfile.{plan.build}, context {len(context) / 1024:.0f} KiB)")
        _build(client, context, plan, tag, log)
    return tag, True


def _has_image(client, tag: str) -> bool:  # type: ignore[no-untyped-def]
    import docker.errors

    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def _build(client, context: bytes, plan: ImagePlan, tag: str, log: Log) -> None:  # type: ignore[no-untyped-def]
    stream = client.api.build(
        fileobj=io.BytesIO(context), custom_context=True, dockerfile=f"Dockerfile.{plan.build}", tag=tag,
        buildargs=plan.build_args, rm=True, forcerm=True, decode=True,
    )  # fmt: skip
    recent: list[str] = []
    for chunk in stream:
        if "error" in chunk:
            tail = "; ".join(recent[-3:])
            raise RunnerError(
                f"building {tag} failed: {chunk['error'].strip()}" + (f" (after: {tail})" if tail else "")
            )
        text = chunk.get("stream") or chunk.get("status") or ""
        for line in text.splitlines():
            if line.strip():
                log(line.rstrip())
                recent.append(line.strip())
    if not _has_image(client, tag):
        raise RunnerError(f"building {tag} ended without an image: {'; '.join(recent[-3:]) or 'no output'}")
