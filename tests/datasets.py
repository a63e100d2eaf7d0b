"""Small YOLO datasets written on the fly, for the dataset check's tests and its benchmark.

Images are real headers with sizes (what the check reads), not whole decodable pictures: a PNG's
signature and IHDR chunk, a JPEG's SOI, JFIF APP0, a quantisation table and its SOF0 frame header.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def png_bytes(width: int = 32, height: int = 24) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def jpeg_bytes(width: int = 32, height: int = 24, exif_bytes: int = 0) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    app1 = b"\xff\xe1" + struct.pack(">H", exif_bytes + 2) + b"\x00" * exif_bytes if exif_bytes else b""
    dqt = b"\xff\xdb" + struct.pack(">H", 67) + b"\x00" + bytes(range(1, 65))
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + app1 + dqt + sof0 + b"\xff\xd9"


def bmp_bytes(width: int = 32, height: int = 24) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, -height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + len(info), 0, 0, 54) + info


def webp_bytes(width: int = 32, height: int = 24) -> bytes:
    """A lossless (VP8L) WebP header."""
    bits = (width - 1) | ((height - 1) << 14)
    payload = b"VP8L" + struct.pack("<I", 5) + b"\x2f" + struct.pack("<I", bits)
    return b"RIFF" + struct.pack("<I", 4 + len(payload)) + b"WEBP" + payload


IMAGE_BYTES = {"png": png_bytes(), "jpg": jpeg_bytes(), "bmp": bmp_bytes(), "webp": webp_bytes()}


def write_split(root: Path, split: str, labels: dict[str, str], suffix: str = "jpg") -> None:
    """images/SPLIT/STEM.SUFFIX and labels/SPLIT/STEM.txt for each stem -> label text (None: no label)."""
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    for stem, text in labels.items():
        (root / "images" / split / f"{stem}.{suffix}").write_bytes(IMAGE_BYTES[suffix])
        if text is not None:
            (root / "labels" / split / f"{stem}.txt").write_text(text)


def ultralytics_yaml(root: Path, names: list[str] | dict[int, str], extra: str = "") -> Path:
    """root/data.yaml in the ultralytics style: `path` (the dataset root), relative splits, names."""
    if isinstance(names, dict):
        listed = "\n".join(f"  {index}: {name}" for index, name in names.items())
    else:
        listed = "\n".join(f"  - {name}" for name in names)
    path = root / "data.yaml"
    path.write_text(f"path: {root}\ntrain: images/train\nval: images/val\n{extra}names:\n{listed}\n")
    return path


def write_ultralytics_dataset(root: Path, train: dict[str, str], val: dict[str, str], names: list[str]) -> Path:
    write_split(root, "train", train)
    write_split(root, "val", val)
    return ultralytics_yaml(root, names)
