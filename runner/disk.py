"""Files on disk, whole or not at all: hashed as read, written under a temporary name and renamed.

Every file the runner writes (downloads, copies for twin jobs, reports) goes through
:func:`part_path` and ``os.replace``, so a file under its final name is always complete, even after
a kill at any instant.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes, read a megabyte at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def part_path(target: Path) -> Path:
    """Where ``target`` is written before it is complete (renamed into place once it is)."""
    return target.with_name(target.name + ".part")
