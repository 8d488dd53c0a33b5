"""Finished outputs on disk as the journal recorded them: what a resumed run trusts, and what it fetches
again."""

from __future__ import annotations

import os
from pathlib import Path

from ..disk import file_sha256
from .store import Store


def damaged_outputs(
    store: Store, output_dir: Path, *, verify_hashes: bool = False, first_only: bool = False
) -> list[str]:
    """Succeeded jobs whose files are not on disk as recorded: missing, another size, or (when their
    mtime changed, or with ``verify_hashes``) other bytes. One ``stat`` per file, read row by row."""
    damaged: list[str] = []
    folder = os.fspath(output_dir)
    last = None
    for job_id, path, size, mtime_ns, sha256 in store.succeeded_outputs():
        if job_id == last:
            continue  # one bad file is enough for the job
        if path is None or not intact(os.path.join(folder, path), size, mtime_ns, sha256, verify_hashes):
            damaged.append(job_id)
            last = job_id
            if first_only:
                break
    return damaged


def intact(
    path: str, size: int | None, mtime_ns: int | None, sha256: str | None, verify: bool = False
) -> bool:
    """Whether the file at ``path`` is the one recorded: its size, and its mtime (else, or with ``verify``,
    its sha256)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if st.st_size != size:
        return False
    if st.st_mtime_ns == mtime_ns and not verify:
        return True
    return file_sha256(path) == sha256
