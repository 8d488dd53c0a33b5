"""Fetching output files: streamed, checked, hashed, and only then put in place.

A download streams into ``<name>.part`` beside its target, is checked against ``Content-Length``,
hashed on the way, fsynced, and renamed into place, so a file under its final name is always
complete. A stalled stream (no bytes for ``stall_seconds``) or a short one is retried. Downloads
never carry the API token, and only allowed hosts are fetched from.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

import anyio

from .. import defaults
from ..disk import written_whole
from ..errors import OutputHostRefused, RequestNotFound, TransportError
from .client import error_from_answer
from .http import HttpSession, Timeouts
from .retry import OnRetry, RetryPolicy, call_with_retry

RUNCOMFY_OUTPUT_DOMAINS = ("runcomfy.net", "runcomfy.com")


@dataclass(frozen=True)
class DownloadConfig:
    """Where outputs may come from, how long connecting may take and how long a silent stream is
    tolerated (a run's is built from its options by ``runner.batch.configure``)."""

    allowed_hosts: tuple[str, ...] = ()
    allow_any_host: bool = False
    stall_seconds: float = defaults.STALL_TIMEOUT
    connect_timeout: float = defaults.CONNECT_TIMEOUT
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def check_host(self, url: str) -> None:
        parsed = urlsplit(url)
        host = parsed.hostname or ""
        if parsed.scheme not in ("http", "https"):
            raise OutputHostRefused(f"output URL {url!r} is not http(s)")
        if self.allow_any_host or host in self.allowed_hosts:
            return
        if any(host == d or host.endswith("." + d) for d in RUNCOMFY_OUTPUT_DOMAINS):
            return
        raise OutputHostRefused(
            f"output URL host {host!r} is not RunComfy's or the API's; "
            f"allow it with --allow-output-host {host}"
        )


@dataclass(frozen=True)
class Downloaded:
    """A complete file in place."""

    path: Path
    size: int
    sha256: str
    mtime_ns: int


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def file_names(urls: list[str]) -> list[str]:
    """Safe, distinct file names for a result's URLs (``output.mp4``, ``output-2.mp4``…)."""
    names: list[str] = []
    for index, url in enumerate(urls):
        base = PurePosixPath(unquote(urlsplit(url).path)).name
        base = _UNSAFE.sub("_", base).lstrip(".") or f"output-{index + 1}"
        stem, dot, suffix = base.rpartition(".")
        if not dot:
            stem, suffix = base, ""
        candidate, n = base, 1
        while candidate in names:
            n += 1
            candidate = f"{stem}-{n}.{suffix}" if suffix else f"{stem}-{n}"
        names.append(candidate)
    return names


class Fsync:
    """``os.fsync`` on the event loop's own thread while the disk answers within a couple of
    milliseconds (a local SSD takes ~0.2 ms), in a worker thread once it does not: a hop to a thread
    costs ~0.1 ms of CPU and one more wake-up of the loop per file, while a slow fsync on the loop
    would hold up every poll and submit behind it. One per run, shared by its downloads."""

    SLOW = 0.002  # seconds: a typical fsync slower than this goes to a thread

    def __init__(self) -> None:
        self.typical = 0.0  # a moving average of how long fsyncs take, waiting for a thread included

    async def __call__(self, fd: int) -> None:
        started = time.perf_counter()
        if self.typical < self.SLOW:
            os.fsync(fd)
        else:
            await anyio.to_thread.run_sync(os.fsync, fd)
        self.typical += 0.2 * (time.perf_counter() - started - self.typical)


async def download(
    http: HttpSession,
    url: str,
    target: Path,
    config: DownloadConfig,
    *,
    on_retry: OnRetry | None = None,
    fsync: Fsync | None = None,
) -> Downloaded:
    """Fetch ``url`` into ``target`` completely, or raise; never leaves a partial file at ``target``."""
    fsync = fsync or Fsync()
    config.check_host(url)
    timeout = Timeouts(config.connect_timeout, config.stall_seconds)

    async def once() -> Downloaded:
        digest = hashlib.sha256()
        size = 0
        try:
            async with http.stream(url, timeout=timeout) as response:
                if response.status == 404:
                    raise RequestNotFound(
                        f"output {url} is gone (404): its results have expired", http_status=404
                    )
                if response.status >= 400:
                    raise error_from_answer(response.status, None, response.headers)
                # Content-Length counts encoded bytes: compare it only where nothing was encoded.
                encoded = response.headers.get("content-encoding", "identity") != "identity"
                expected = None if encoded else response.headers.get("content-length")
                # fsync is ours (it may go to a thread), before the file is renamed into place.
                with written_whole(target, sync=False) as handle:
                    async for chunk in response.chunks():
                        handle.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
                    if expected is not None and int(expected) != size:
                        raise TransportError(f"got {size} of {expected} bytes")
                    handle.flush()
                    await fsync(handle.fileno())
        except TransportError as exc:
            raise TransportError(f"download of {url}: {exc}") from None
        return Downloaded(target, size, digest.hexdigest(), target.stat().st_mtime_ns)

    return await call_with_retry(once, config.retry, on_retry=on_retry)


async def still_served(
    http: HttpSession, url: str, config: DownloadConfig, *, on_retry: OnRetry | None = None
) -> bool:
    """Whether RunComfy still serves an output (anything but a 404), asked without reading the file.
    A URL that cannot be asked (a host not allowed, the network down) counts as served: the request
    that names it then says what RunComfy thinks."""
    timeout = Timeouts(config.connect_timeout, config.stall_seconds)

    async def once() -> bool:
        async with http.stream(url, timeout=timeout) as response:
            return response.status != 404

    try:
        config.check_host(url)
        return await call_with_retry(once, config.retry, on_retry=on_retry)
    except (OutputHostRefused, TransportError):
        return True
