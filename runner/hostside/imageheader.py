"""Image headers: is this file a JPEG, PNG, BMP or WebP, and how large is it? Standard library only,
Python >= 3.7 (it runs on the host, inside any job image).

Only the first bytes are read (a JPEG's frame header is found by walking its segments, each skipped
with a seek), so checking 100,000 images costs 100,000 small reads, not the images' gigabytes. The
format is told by the bytes, not the file name: the trainers' image libraries do the same.
"""

import os
import struct

HEAD_BYTES = 1024  # a JPEG without a large EXIF block has its frame header in the first few hundred bytes
JPEG_MAX_SEGMENTS = 64  # real files have about ten segments before the frame header; more is garbage
MIN_SIDE = 10  # ultralytics and YOLOv7 drop images with a side under 10 pixels as corrupt
MAX_PIXELS = 178956970  # Pillow refuses larger images outright (twice its decompression-bomb limit)

# JPEG start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
JPEG_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}  # RSTn and TEM: markers without a length
TIFF_MAGIC = (b"II*\x00", b"MM\x00*")


class BadImage(Exception):
    """The header does not read as an image this checker knows, or its size is not sane."""


def read_header(path):
    """(format, width, height) of the image at path; width and height are None for formats whose
    header is recognised but not measured (TIFF, DNG). Raises BadImage or OSError."""
    fd = os.open(path, os.O_RDONLY)
    try:
        head = os.read(fd, HEAD_BYTES)
        kind, width, height = _identify(fd, head)
    finally:
        os.close(fd)
    # The test written out here, not in a function: it runs 100,000 times in a dataset check.
    if width is not None and not (width >= MIN_SIDE and height >= MIN_SIDE and width * height <= MAX_PIXELS):
        _refuse_size(width, height)
    return kind, width, height


def _identify(fd, head):
    if head[:3] == b"\xff\xd8\xff":
        width, height = _jpeg_size(fd, head)
        return "jpeg", width, height
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        width, height = _png_size(head)
        return "png", width, height
    if head[:2] == b"BM":
        width, height = _bmp_size(head)
        return "bmp", width, height
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        width, height = _webp_size(head)
        return "webp", width, height
    if head[:4] in TIFF_MAGIC:
        return "tiff", None, None
    if not head:
        raise BadImage("empty file")
    raise BadImage("not a JPEG, PNG, BMP or WebP image (starts with %s)" % head[:8].hex())


def _refuse_size(width, height):
    if width < MIN_SIDE or height < MIN_SIDE:
        raise BadImage("%dx%d pixels: trainers drop images with a side under %d" % (width, height, MIN_SIDE))
    if width * height > MAX_PIXELS:
        raise BadImage("%dx%d pixels: more than Pillow opens (%d)" % (width, height, MAX_PIXELS))


def _png_size(head):
    if len(head) < 24 or head[12:16] != b"IHDR":
        raise BadImage("PNG without its IHDR header")
    return struct.unpack(">II", head[16:24])


def _bmp_size(head):
    if len(head) < 26:
        raise BadImage("BMP header cut short")
    (header_size,) = struct.unpack("<I", head[14:18])
    if header_size == 12:  # the old OS/2 header: 16-bit sizes
        return struct.unpack("<HH", head[18:22])
    if header_size < 40:
        raise BadImage("BMP with an unknown header (%d bytes)" % header_size)
    width, height = struct.unpack("<ii", head[18:26])
    return width, abs(height)  # a negative height means top-down rows


def _webp_size(head):
    chunk = head[12:16]
    if chunk == b"VP8 " and len(head) >= 30:
        if head[23:26] != b"\x9d\x01\x2a":
            raise BadImage("WebP (lossy) without its frame start code")
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(head) >= 25:
        if head[20:21] != b"\x2f":
            raise BadImage("WebP (lossless) without its signature byte")
        (bits,) = struct.unpack("<I", head[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(head) >= 30:
        width = int.from_bytes(head[24:27], "little") + 1
        height = int.from_bytes(head[27:30], "little") + 1
        return width, height
    raise BadImage("WebP with an unknown or cut short first chunk %r" % chunk)


def _jpeg_size(fd, head):
    """Walk the segments after SOI to the first start-of-frame; what lies beyond the first
    HEAD_BYTES is reached by seeking, so a 60 KiB EXIF block costs one seek, not a 60 KiB read."""
    buffer, base, offset = head, 0, 2  # buffer holds the file's bytes from base on
    for _ in range(JPEG_MAX_SEGMENTS):
        at = offset - base
        if at + 9 > len(buffer):
            buffer, base, at = _read_at(fd, offset, 64), offset, 0
            if len(buffer) < 4:
                break
        if buffer[at] != 0xFF:
            raise BadImage("JPEG segment without a marker at byte %d" % offset)
        marker = buffer[at + 1]
        if marker in JPEG_SOF:
            if len(buffer) < at + 9:
                break
            return buffer[at + 7] << 8 | buffer[at + 8], buffer[at + 5] << 8 | buffer[at + 6]  # width, height
        if marker == 0xFF:  # a fill byte before a marker
            offset += 1
        elif marker in JPEG_STANDALONE:
            offset += 2
        elif marker == 0xDA or marker == 0xD9:
            raise BadImage("JPEG image data before its frame header")
        else:
            length = buffer[at + 2] << 8 | buffer[at + 3]
            if length < 2:
                raise BadImage("JPEG segment of impossible length at byte %d" % offset)
            offset += 2 + length
    raise BadImage("JPEG without a frame header (cut short?)")


def _read_at(fd, offset, size):
    os.lseek(fd, offset, os.SEEK_SET)
    return os.read(fd, size)
