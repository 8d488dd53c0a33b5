"""Files on disk, whole or not at all: hashed as read, written under a temporary name and renamed.

Every file the runner writes (downloads, copies for twin jobs, reports) goes through
:func:`part_path` and ``os.replace``, so a file under its final name is always complete, even after
a kill at any instant.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

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


@contextmanager
def written_whole(target: Path, *, text: bool = False, sync: bool = True) -> Iterator[IO[Any]]:
    """A file opened at ``target``'s part path; when the block ends cleanly it is flushed, fsynced
    (unless ``sync`` is off: the caller made it durable already) and renamed into place. When the
    block raises, the part is removed and ``target`` is left as it was."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(target)
    try:
        opened: IO[Any] = open(part, "w", encoding="utf-8", newline="") if text else open(part, "wb")
        with opened as out:
            yield out
            out.flush()
            if sync:
                os.fsync(out.fileno())
        os.replace(part, target)
    finally:
        if part.exists():
            part.unlink()


def copy_whole(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target``, which holds either its old bytes or all of the new ones."""
    with open(source, "rb") as src, written_whole(target) as out:
        shutil.copyfileobj(src, out, CHUNK)
