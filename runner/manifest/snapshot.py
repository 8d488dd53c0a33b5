"""What a state file remembers of the manifest it last synced, so `status`, and a `run` with nothing
left to do, can answer without reading and checking 100,000 jobs again (seconds, where the state
file answers in milliseconds).

The jobs a manifest expands into depend on four things, and the snapshot records all of them: the
manifest file's bytes (sha256), every local file inlined into an input or named as a model schema
(path, size, mtime), the bundled schemas and the synced catalog, and the code that reads manifests.
When all four are as recorded, the jobs in the state file *are* the manifest's jobs, exactly as a
full load would give them. When anything differs, or cannot be told cheaply, callers fall back to
loading the manifest: the snapshot only ever saves time, it never decides differently.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

from ..catalog.models import schema_dir
from ..catalog.synced import cache_path
from ..disk import file_sha256
from .loader import Manifest

META_KEY = "manifest_snapshot"
# The modules whose code decides what a manifest expands into.
_READERS = (
    "manifest/loader.py",
    "manifest/chains.py",
    "manifest/tables.py",
    "manifest/job.py",
    "manifest/matrix.py",
    "manifest/validate.py",
    "manifest/yamldoc.py",
    "manifest/inputs.py",
    "manifest/own_models.py",
    "catalog/models.py",
    "catalog/normalise.py",
    "catalog/schema.py",
    "catalog/synced.py",
)


def reader_digest() -> str:
    """sha256 over the bundled schemas, the code that reads manifests and the synced catalog (whose
    file may change between two runs of one process, so it is hashed each time: it is small)."""
    digest = hashlib.sha256(_bundled_digest().encode())
    try:
        digest.update(cache_path().read_bytes())
    except OSError:
        digest.update(b"no synced catalog")
    return digest.hexdigest()


@cache
def _bundled_digest() -> str:
    """sha256 over the bundled schemas and the reading code (computed once a process)."""
    digest = hashlib.sha256()
    here = Path(__file__).parent.parent
    files = sorted(p for p in schema_dir().rglob("*") if p.is_file()) + [here / name for name in _READERS]
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


@dataclass(frozen=True)
class Snapshot:
    """A manifest as synced into a state file."""

    manifest: str  # absolute path when synced
    sha256: str
    local_files: tuple[tuple[str, int, int], ...]
    readers: str
    name: str
    output_dir: str
    jobs: int

    @classmethod
    def of(cls, manifest: Manifest) -> Snapshot | None:
        if manifest.source is None or manifest.source.stdin:  # nothing to read again and compare
            return None
        return cls(
            str(manifest.path),
            manifest.source.sha256,
            manifest.source.local_files,
            reader_digest(),
            manifest.name,
            str(manifest.output_dir),
            len(manifest.jobs),
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> Snapshot | None:
        if not text:
            return None
        try:
            data = json.loads(text)
            data["local_files"] = tuple(tuple(f) for f in data["local_files"])
            return cls(**data)
        except (ValueError, TypeError, KeyError):
            return None

    def matches(self, path: str | Path) -> bool:
        """Whether the manifest at ``path`` would load into exactly the jobs this snapshot recorded."""
        if self.readers != reader_digest():
            return False
        try:
            if file_sha256(path) != self.sha256:
                return False
            for name, size, mtime_ns in self.local_files:
                st = os.stat(name)
                if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
                    return False
        except OSError:
            return False
        return True


_TOP_NAME = re.compile(rb"^name[ \t]*:[ \t]*(.*?)[ \t]*(?:#.*)?$", re.MULTILINE)
_TOP_OUTPUT = re.compile(rb"^output_dir[ \t]*:[ \t]*(.*?)[ \t]*(?:#.*)?$", re.MULTILINE)
_TOP_JOBS = re.compile(rb"^jobs[ \t]*:", re.MULTILINE)
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# A path written as a plain or quoted scalar with nothing YAML would read otherwise (no escapes, anchors,
# tags, flow or block indicators).
_PLAIN_PATH = re.compile(r"[^\s'\"&*!|>{}\[\],#%@`\\][^'\"\\]*")


def _top_value(pattern: re.Pattern[bytes], data: bytes) -> str | None:
    """The one top-level value of a key, unquoted; ``""`` when the key is absent; ``None`` when unsure."""
    found = pattern.findall(data)
    if not found:
        return ""
    if len(found) > 1:
        return None
    value: str = found[0].decode("utf-8", "replace")
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return value


def quick_name(path: str | Path) -> str | None:
    """The manifest's ``name`` read off its top-level ``name:`` line (or the file's stem when a
    block-style manifest has none), without parsing the YAML; ``None`` when that cannot be told
    for sure. Used only to find the state file; what is found there is then checked by sha256."""
    if os.fspath(path) == "-":
        return None  # standard input: read once, by the full load
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    return _quick_name(Path(path), data)


def _quick_name(path: Path, data: bytes) -> str | None:
    value = _top_value(_TOP_NAME, data)
    if value == "":
        return path.stem if _TOP_JOBS.search(data) and not _TOP_NAME.search(data) else None
    return value if value is not None and _PLAIN.fullmatch(value) else None


def quick_output_dir(path: str | Path) -> Path | None:
    """The manifest's output folder as :func:`~runner.manifest.loader.load_manifest` would make it,
    read off its top-level ``output_dir:`` (and ``name:``) lines without parsing the YAML; ``None``
    when that cannot be told for sure. Used only to find the journal, which lives in that folder;
    what is found there is then checked by sha256."""
    if os.fspath(path) == "-":
        return None  # standard input: read once, by the full load
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    if not _TOP_JOBS.search(data):
        return None  # a flow-style manifest, or not one at all: only a full load can tell
    folder = Path(os.path.abspath(path)).parent
    output = _top_value(_TOP_OUTPUT, data)
    if output is None or (output and not _PLAIN_PATH.fullmatch(output)):
        return None
    if output:
        return Path(os.path.abspath(folder / os.path.expanduser(output)))
    name = _quick_name(Path(path), data)
    return None if name is None else Path(os.path.abspath(folder / "out" / name))
