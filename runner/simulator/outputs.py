"""What a finished job's output files contain: the same bytes every time, different for every file,
and of the kind the model makes (a video, an image or an audio track), each one a file that opens.

Every file is a small valid sample padded with SHAKE-256 bytes of ``"{request_id}/{index}"`` up to
exactly ``size`` bytes, where the format has room for padding that players skip:

* video: ``sample.mp4`` (a 1-second, 160×90, 12 fps H.264 test pattern of ~7 KB, made once with
  Debian's ffmpeg, see below) followed by one top-level MP4 ``free`` box holding the padding;
* image: an 8×8 PNG made here, with the padding in a ``tEXt`` chunk (as hex digits) before ``IEND``;
* audio: a WAV file, 8 kHz mono 8-bit PCM, whose samples are the padding (a second of noise at 8 KB;
  RIFF chunks are even-sized, so an odd ``size`` ends in one byte past the RIFF chunk).

A size too small to hold the sample gives just the SHAKE bytes (not a playable file). Tests compare
a download with :func:`expected_output_bytes` byte for byte.

The video sample was made with::

    ffmpeg -f lavfi -i testsrc2=size=160x90:rate=12:duration=1 -c:v libx264 -profile:v baseline \\
        -level 3.0 -preset veryslow -crf 32 -pix_fmt yuv420p -movflags +faststart -map_metadata -1 \\
        -fflags +bitexact -flags:v +bitexact sample.mp4
"""

from __future__ import annotations

import functools
import hashlib
import struct
import zlib
from pathlib import Path

DEFAULT_OUTPUT_BYTES = 64 * 1024
_SAMPLE = Path(__file__).with_name("sample.mp4")
KINDS = ("video", "image", "audio")
SUFFIXES = {"video": ".mp4", "image": ".png", "audio": ".wav"}
MEDIA_TYPES = {"video": "video/mp4", "image": "image/png", "audio": "audio/wav"}


@functools.cache
def sample_mp4() -> bytes:
    """The playable clip every video output starts with."""
    return _SAMPLE.read_bytes()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@functools.cache
def _png_parts() -> tuple[bytes, bytes]:
    """An 8×8 RGB test pattern as a PNG, split before its ``IEND`` chunk."""
    side = 8
    pixel = [(x * 32 % 256, y * 32 % 256, (x + y) * 16 % 256) for y in range(side) for x in range(side)]
    rows = b"".join(b"\x00" + b"".join(bytes(pixel[y * side + x]) for x in range(side)) for y in range(side))
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    head = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows, 9))
    return head, _chunk(b"IEND", b"")


def output_name(index: int, kind: str = "video", *, bare: bool = False) -> str:
    """The file name of a job's ``index``-th output: ``output.mp4``, ``output-1.png``… (``bare``:
    without the extension, as an API whose URLs carry none would write it)."""
    stem = "output" if index == 0 else f"output-{index}"
    return stem if bare else stem + SUFFIXES.get(kind, ".mp4")


def output_index(name: str) -> int | None:
    """The inverse of :func:`output_name` (any kind, with or without its extension); None for a name
    no job produces."""
    stem = name
    for suffix in SUFFIXES.values():
        stem = stem.removesuffix(suffix)
    if stem == "output":
        return 0
    number = stem.removeprefix("output-")
    if stem.startswith("output-") and number.isdigit() and number[0] != "0":
        return int(number)
    return None


def expected_output_bytes(
    request_id: str, index: int = 0, size: int = DEFAULT_OUTPUT_BYTES, kind: str = "video"
) -> bytes:
    """The exact content of output file ``index`` of ``request_id`` when files are ``size`` bytes and
    of the given kind."""
    seed = f"{request_id}/{index}".encode()
    filler = hashlib.shake_256(seed)
    if kind == "image":
        return _png(seed, size)
    if kind == "audio":
        return _wav(seed, size)
    sample = sample_mp4()
    room = size - len(sample)
    if room < 8:
        return filler.digest(size) if size else b""
    if room < 2**32:
        header = room.to_bytes(4, "big") + b"free"
    else:  # a 64-bit "largesize" box header
        header = (1).to_bytes(4, "big") + b"free" + room.to_bytes(8, "big")
    return sample + header + filler.digest(room - len(header))


def _png(seed: bytes, size: int) -> bytes:
    filler = hashlib.shake_256(seed)
    head, end = _png_parts()
    keyword = b"Comment\x00"
    room = size - len(head) - len(end) - 12 - len(keyword)  # 12: a chunk's length, type and CRC
    if room < 0:
        return filler.digest(size) if size else b""
    text = filler.hexdigest((room + 1) // 2)[:room].encode("ascii")
    return head + _chunk(b"tEXt", keyword + text) + end


def _wav(seed: bytes, size: int) -> bytes:
    filler = hashlib.shake_256(seed)
    header_bytes = 44
    samples = size - header_bytes
    if samples < 2:
        return filler.digest(size) if size else b""
    samples -= samples % 2
    rate = 8000
    header = b"RIFF" + struct.pack("<I", 36 + samples) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate, 1, 8)
    header += b"data" + struct.pack("<I", samples)
    body = filler.digest(samples)
    return header + body + (b"\x00" if size % 2 else b"")
