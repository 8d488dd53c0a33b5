"""Where a manifest's journal lives, and what it belongs to.

A journal is the memory of what was paid for one set of output files, so it lives with them: in the
run's output folder, as ``<output_dir>/.runcomfy-batch/journal.sqlite`` (its lock beside it). The output
folder is derived from the manifest file's own place (``output_dir`` is relative to it), never from the
working folder, so the same manifest run from another folder, from cron, from a second terminal, after
a rename of the file, or with ``--output DIR`` finds the one journal that owns those files; the folder
can be moved whole and keeps its memory. ``--state FILE`` puts it elsewhere.

A journal records its *owner* (:class:`Owner`): the manifest file it belongs to and the API its
requests went to. A journal of another manifest is refused (two manifests aimed at one output folder
would pay into each other's files), unless that manifest file is gone: then this one is taken to be it,
renamed or moved, and takes the journal over. Results from one API never satisfy a run against another
(a simulator's test clips are not RunComfy's videos): a run against another API is refused. A
``--simulate`` run keeps its own output folder, ``<output_dir>-simulated``, and so its own journal.

Journals of earlier versions lived at ``state/<name>.sqlite`` under the working folder. One found there
(or beside the manifest) that belongs to this manifest and this output folder is moved into its new
place, and the move is told in one line.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .. import defaults
from ..errors import JournalRefused, StateLocked, UsageError
from ..manifest.loader import Manifest, refuse_output_dir
from ..manifest.snapshot import META_KEY, Snapshot
from .store import Store

JOURNAL_FOLDER = ".runcomfy-batch"
JOURNAL_FILE = "journal.sqlite"
SIMULATED_SUFFIX = "-simulated"
SIMULATOR = "the bundled simulator"
OWNER_KEY = "owner"
# What an old journal (from before journals recorded their API) is taken to have talked to when its
# outputs came from a loopback host: a simulator, whose results must not satisfy a real run.
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def journal_path(output_dir: Path) -> Path:
    """The journal of the run whose outputs go into ``output_dir``."""
    return Path(output_dir) / JOURNAL_FOLDER / JOURNAL_FILE


def simulated_output_dir(output_dir: Path) -> Path:
    """Where a ``--simulate`` run puts its outputs (and its journal) instead of ``output_dir``."""
    output_dir = Path(output_dir)
    return output_dir.with_name(output_dir.name + SIMULATED_SUFFIX)


def run_output_dir(manifest_output_dir: Path, output: Path | None = None, *, simulated: bool = False) -> Path:
    """A run's output folder: ``output`` (``--output``), else the manifest's, which a simulated run
    makes ``<output_dir>-simulated`` so its test clips never mix with real results."""
    if output is not None:
        return Path(os.path.abspath(os.path.expanduser(output)))
    return simulated_output_dir(manifest_output_dir) if simulated else Path(manifest_output_dir)


def api_of(base_url: str, *, simulated: bool = False) -> str:
    """The API a run's requests go to, as journals record it: the base URL's origin (scheme, host, port
    when not the scheme's default), or :data:`SIMULATOR` for ``--simulate`` (whose port changes)."""
    if simulated:
        return SIMULATOR
    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    default_port = {"http": 80, "https": 443}.get(parts.scheme)
    port = f":{parts.port}" if parts.port is not None and parts.port != default_port else ""
    return f"{parts.scheme}://{host}{port}"


DEFAULT_API = api_of(defaults.BASE_URL)


def is_simulator(api: str) -> bool:
    """Whether results from ``api`` are a simulator's (test clips, never charged)."""
    return api == SIMULATOR or api.startswith("a simulator")


@dataclass(frozen=True)
class Owner:
    """What a journal belongs to: a manifest file (its absolute path; ``""`` for a manifest with no file
    of its own, known by its name) and the API its requests went to (``""``: not known yet)."""

    manifest: str
    name: str
    api: str = ""

    @classmethod
    def of(cls, manifest: Manifest, api: str = "") -> Owner:
        has_file = manifest.source is not None and manifest.path.is_file()
        return cls(str(manifest.path) if has_file else "", manifest.name, api)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> Owner | None:
        try:
            data = json.loads(text or "")
            return cls(str(data["manifest"]), str(data["name"]), str(data.get("api") or ""))
        except (ValueError, TypeError, KeyError):
            return None

    def same_manifest(self, other: Owner) -> bool:
        if self.manifest and other.manifest:
            return self.manifest == other.manifest
        return self.name == other.name

    @property
    def shown_api(self) -> str:
        return self.api or "an API not recorded"


def recorded_owner(store: Store) -> Owner | None:
    """The owner a journal recorded; for a journal of an earlier version, the one its snapshot implies
    (with the API read off its outputs' host where that was a loopback simulator)."""
    owner = Owner.from_json(store.get_meta(OWNER_KEY))
    if owner is not None:
        return owner
    snapshot = Snapshot.from_json(store.get_meta(META_KEY))
    if snapshot is None:
        return None
    host = urlsplit(store.some_output_url() or "").hostname
    api = f"a simulator on {host}" if host in _LOOPBACK else ""
    return Owner(snapshot.manifest, snapshot.name, api)


def check_owner(store: Store, owner: Owner, *, record: bool, api_matters: bool) -> list[str]:
    """Refuse (:class:`JournalRefused`) a journal that belongs to another manifest, or, where
    ``api_matters``, whose results came from another API; record ``owner`` when ``record`` (a run).
    The notices to tell the user (a rename taken over)."""
    notices: list[str] = []
    recorded = recorded_owner(store)
    where = store.path
    if recorded is not None and not recorded.same_manifest(owner):
        if recorded.manifest and Path(recorded.manifest).exists():
            raise JournalRefused(
                f"{where} is the journal of {recorded.manifest}, not of {owner.manifest or owner.name}: "
                "two manifests cannot share one journal or output folder; give this one its own output_dir "
                "(or --output DIR)"
            )
        notices.append(
            f"the journal {where} belonged to {recorded.manifest or recorded.name}, which is gone: "
            f"taken over by {owner.manifest or owner.name} (renamed or moved)"
        )
    if api_matters and recorded is not None and recorded.api and recorded.api != owner.api:
        beside_outputs = where.name == JOURNAL_FILE and where.parent.name == JOURNAL_FOLDER
        raise JournalRefused(
            f"{where} holds results from {recorded.shown_api}, not from {owner.api}: they cannot "
            f"satisfy this run; give it its own folder with --output DIR (or --state FILE), or remove "
            f"{where.parent.parent if beside_outputs else where} to start over"
        )
    if record:
        api = owner.api or (recorded.api if recorded else "")
        fresh = Owner(owner.manifest, owner.name, api)
        if fresh != Owner.from_json(store.get_meta(OWNER_KEY)):
            store.set_meta(OWNER_KEY, fresh.to_json())
            store.flush()
    return notices


@dataclass(frozen=True)
class Located:
    """A manifest's journal, and what finding it did that the user should be told (one line each)."""

    path: Path
    notices: tuple[str, ...] = ()


def refuse_unplaced(manifest: Manifest, state_path: Path | None, output: Path | None) -> None:
    """A manifest read from standard input has no folder of its own: its output folder, where its
    journal lives, would come from the working folder alone, as every other piped manifest's would.
    It needs ``--output`` (or ``--state``): :class:`UsageError` without either."""
    if manifest.source is not None and manifest.source.stdin and state_path is None and output is None:
        raise UsageError(
            "a manifest read from standard input has no place of its own for its outputs and journal: "
            "give --output DIR (or --state FILE)"
        )


def locate(manifest: Manifest, state_path: Path | None, cwd: Path | None = None) -> Located:
    """The journal of ``manifest`` (whose ``output_dir`` is the run's): ``state_path`` when given, else
    the one in its output folder, moving there a journal of an earlier version that belongs to it."""
    problem = refuse_output_dir(manifest.output_dir)
    if problem:
        raise UsageError(f"the output folder {manifest.output_dir} {problem}")
    if state_path is not None:
        return Located(Path(state_path))
    target = journal_path(manifest.output_dir)
    old = [path for path in _old_journals(manifest, cwd) if _belongs(path, manifest)]
    if not old:
        return Located(target)
    if target.exists():
        return Located(
            target,
            (
                f"an older journal of this manifest, {old[0]}, is not used (the one beside the outputs "
                "is); remove it once you no longer need it",
            ),
        )
    _move(old[0], target)
    return Located(target, (f"moved this manifest's journal from {old[0]} to {target}, beside its outputs",))


def _old_journals(manifest: Manifest, cwd: Path | None) -> list[Path]:
    """Where journals of earlier versions were put: ``state/<name>.sqlite`` under the working folder
    (their default), or under the manifest's folder."""
    places = [(cwd or Path.cwd()) / "state", manifest.path.parent / "state"]
    found: list[Path] = []
    for folder in places:
        path = Path(os.path.abspath(folder / f"{manifest.name}.sqlite"))
        if path.is_file() and path not in found:
            found.append(path)
    return found


def _belongs(path: Path, manifest: Manifest) -> bool:
    """Whether the old journal at ``path`` was this manifest's, for this very output folder."""
    snapshot = Snapshot.from_json(Store.peek_meta(path, META_KEY))
    return (
        snapshot is not None
        and snapshot.manifest == str(manifest.path)
        and snapshot.output_dir == str(manifest.output_dir)
    )


def _move(old: Path, target: Path) -> None:
    """Move a journal file (whole: its write-ahead log folded in first) under its run lock."""
    lock_path = old.with_name(old.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StateLocked(f"{old}: another runner is running this manifest; wait for it") from None
        with Store.open(old, create=False) as store:
            store.checkpoint()
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(old, target)
        for suffix in ("-wal", "-shm"):
            Path(f"{old}{suffix}").unlink(missing_ok=True)
    finally:
        os.close(fd)
        lock_path.unlink(missing_ok=True)
