"""What a finished job's output files contain: the same bytes every time, different for every file.

Each file is ``sample.mp4`` (a 1-second, 160×90, 12 fps H.264 test pattern of ~7 KB, made once with
Debian's ffmpeg, see below) followed by one top-level MP4 ``free`` box filled with SHAKE-256 bytes of
``"{request_id}/{index}"``, so that the file is exactly ``size`` bytes, unique per request and output,
and still plays (players skip ``free`` boxes). A size too small to hold the sample gives just the SHAKE
bytes (not a playable MP4). Tests compare a download with :func:`expected_output_bytes` byte for byte.

The sample was made with::

    ffmpeg -f lavfi -i testsrc2=size=160x90:rate=12:duration=1 -c:v libx264 -profile:v baseline \\
        -level 3.0 -preset veryslow -crf 32 -pix_fmt yuv420p -movflags +faststart -map_metadata -1 \\
        -fflags +bitexact -flags:v +bitexact sample.mp4
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

DEFAULT_OUTPUT_BYTES = 64 * 1024
_SAMPLE = Path(__file__).with_name("sample.mp4")


@functools.cache
def sample_mp4() -> bytes:
    """The playable clip every output file starts with."""
    return _SAMPLE.read_bytes()


def output_name(index: int) -> str:
    """The file name of a job's ``index``-th output: ``output.mp4``, ``output-1.mp4``…"""
    return "output.mp4" if index == 0 else f"output-{index}.mp4"


def output_index(name: str) -> int | None:
    """The inverse of :func:`output_name`; None for a name no job produces."""
    if name == "output.mp4":
        return 0
    stem = name.removeprefix("output-").removesuffix(".mp4")
    if name.startswith("output-") and name.endswith(".mp4") and stem.isdigit() and stem[0] != "0":
        return int(stem)
    return None


def expected_output_bytes(request_id: str, index: int = 0, size: int = DEFAULT_OUTPUT_BYTES) -> bytes:
    """The exact content of output file ``index`` of ``request_id`` when files are ``size`` bytes."""
    filler = hashlib.shake_256(f"{request_id}/{index}".encode())
    sample = sample_mp4()
    room = size - len(sample)
    if room < 8:
        return filler.digest(size) if size else b""
    if room < 2**32:
        header = room.to_bytes(4, "big") + b"free"
    else:  # a 64-bit "largesize" box header
        header = (1).to_bytes(4, "big") + b"free" + room.to_bytes(8, "big")
    return sample + header + filler.digest(room - len(header))
