"""Bringing a finished job's outputs home: download each file into ``<output_dir>/<job id>/``, journal it
(path, size, sha256, mtime), and give the job's twins their copies.

Downloads are bounded by the run's collectors, not by the API's limiter: a long one must not hold a
slot that polls and submits need (and the API's 429s say nothing about the file host). A twin gets a
copy of each file, written whole, and takes its leader's attempt as its own: one paid request, two
job ids with their files.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..api.download import DownloadConfig, Fsync, download, file_names
from ..api.http import HttpSession
from ..api.retry import OnRetry
from ..disk import copy_whole
from ..errors import ApiError, ErrorRecord, OutputHostRefused, RequestNotFound, StorageError, folder_trouble
from .events import Emit, EventKind
from .states import JobState
from .store import Store


class Collector:
    """Downloads and journals outputs; knows which twins follow which leader."""

    def __init__(
        self,
        store: Store,
        http: HttpSession,
        output_dir: Path,
        config: DownloadConfig,
        *,
        emit: Emit,
        on_retry: OnRetry | None = None,
        output_kind_of: Callable[[str], str | None] | None = None,
    ) -> None:
        self.store = store
        self.http = http
        self.output_dir = output_dir
        self.config = config
        self.on_retry = on_retry
        self.output_kind_of = output_kind_of or (lambda job_id: None)  # names files without an extension
        self._emit = emit
        self._fsync = Fsync()  # one per run: it learns how fast this disk syncs
        self.followers: dict[str, list[str]] = {}  # leader -> twins waiting for its outputs
        # Jobs this run saw finish: a 404 on their files may only mean "not on the CDN yet", so it is
        # retried for a grace (a job collected on a later run gets none: its 404 is expiry).
        self.seen_finishing: set[str] = set()

    async def collect(self, job_id: str) -> JobState:
        """Download the outputs of the job's current attempt; the state the job is left in
        (``collecting`` when transient trouble outlasted the retries: the next run tries again)."""
        attempt = self.store.current_outputs(job_id)
        if attempt is None or not attempt[1]:
            self.store.set_status(job_id, JobState.FAILED, ErrorRecord("NoOutput", "no outputs recorded"))
            return JobState.FAILED
        attempt_id, urls = attempt
        folder = self.output_dir / job_id
        grace = self.config.not_found_grace if job_id in self.seen_finishing else 0.0
        self.seen_finishing.discard(job_id)
        kind = self.output_kind_of(job_id)
        try:
            for idx, (url, name) in enumerate(zip(urls, file_names(urls), strict=True)):
                got = await download(
                    self.http,
                    url,
                    folder / name,
                    self.config,
                    on_retry=self.on_retry,
                    fsync=self._fsync,
                    not_found_grace=grace,
                    kind=kind,
                )
                rel = got.path.relative_to(self.output_dir).as_posix()
                self.store.record_output(
                    job_id, attempt_id, idx, url, rel, got.size, got.sha256, got.mtime_ns
                )
        except RequestNotFound as exc:
            why = exc.as_record().reworded(
                "the outputs expired at RunComfy before they were downloaded; run the job again"
            )
            self.store.record_expired(job_id, attempt_id, why)
            self._emit(EventKind.EXPIRED, job_id=job_id)
            self.fail_twins(job_id, JobState.EXPIRED, why)
            return JobState.EXPIRED
        except OutputHostRefused as exc:
            self.store.set_status(job_id, JobState.FAILED, exc.as_record())
            self._emit(EventKind.FAILED, job_id=job_id, error=str(exc))
            return JobState.FAILED
        except ApiError as exc:
            self._emit(EventKind.DOWNLOAD_ERROR, job_id=job_id, error=str(exc))
            return JobState.COLLECTING
        self.store.record_collected(job_id, attempt_id)
        self._emit(EventKind.SUCCEEDED, job_id=job_id)
        self.copy_to_twins(job_id)
        return JobState.SUCCEEDED

    def copy_to_twins(self, leader: str) -> None:
        """The twins following ``leader`` (which succeeded) get its files and its attempt."""
        twins = self.followers.pop(leader, [])
        if not twins:
            return
        attempt_id = self.store.current_attempt(leader)
        assert attempt_id is not None  # the leader succeeded: it has an attempt
        files = self.store.outputs_of(leader, attempt_id)
        for twin in twins:
            try:
                for output in files:
                    source = self.output_dir / output.path
                    target = self.output_dir / twin / Path(output.path).name
                    copy_whole(source, target)
                    rel = target.relative_to(self.output_dir).as_posix()
                    self.store.record_output(
                        twin,
                        attempt_id,
                        output.idx,
                        output.url,
                        rel,
                        output.bytes,
                        output.sha256,
                        target.stat().st_mtime_ns,
                    )
            except OSError as exc:
                if folder_trouble(exc):
                    raise self.cannot_write(exc, twin) from exc
                # This twin's path only (a file where its folder should be): it waits, and the next run
                # copies its leader's files again.
                why = ErrorRecord("OSError", f"cannot copy {leader}'s outputs: {exc}")
                self.store.set_status(twin, JobState.PENDING, why)
                self._emit(EventKind.DOWNLOAD_ERROR, job_id=twin, twin_of=leader, error=why.message)
                continue
            self.store.adopt_attempt(twin, attempt_id, JobState.SUCCEEDED)
            self._emit(EventKind.SUCCEEDED, job_id=twin, twin_of=leader)

    def cannot_write(self, exc: OSError, job_id: str | None = None) -> StorageError:
        """The error that stops a run whose output folder cannot be written (full, read-only…)."""
        where = self.output_dir / job_id if job_id else self.output_dir
        return StorageError(
            f"cannot write into the output folder {where}: {exc.strerror or exc}; make room (or make it "
            "writable) and run the same command again: finished jobs are downloaded then, none is paid twice"
        )

    def fail_twins(self, leader: str, state: JobState, error: ErrorRecord) -> None:
        """``leader`` ended without outputs: the twins following it end the same way."""
        for twin in self.followers.pop(leader, []):
            self.store.set_status(twin, state, error.for_twin(leader))
            self._emit(EventKind(state), job_id=twin, twin_of=leader, error=error.message)
