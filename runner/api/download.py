"""Fetching output files: streamed, checked, hashed, and only then put in place.

A download streams into ``<name>.part`` beside its target, is checked against ``Content-Length``,
hashed on the way, fsynced, and renamed into place, so a file under its final name is always
complete. A stalled stream (no bytes for ``stall_seconds``) or a short one is retried. Downloads
never carry the API token, and only allowed hosts are fetched from.

A 404 means the outputs expired (RunComfy keeps them about 7 days), except just after the finish: a
file may not be on the CDN yet for a moment after its result announced it, so a caller that has just
seen the job finish gives a grace (``not_found_grace``) during which a 404 is retried like a 5xx
(``docs/api-answers.md``).

A file is named after its URL (:func:`file_names`); where the URL's name has no extension, the
answer's ``Content-Type`` gives one, else the kind of file the model makes (``.png`` for an image,
``.mp4`` for a video, ``.mp3`` for audio), so that every file opens in the right program.
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
from .answers import error_from_answer
from .http import HttpSession, Timeouts
from .retry import OnRetry, RetryPolicy, call_with_retry, is_transient

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
    # How long a 404 on a file of a job just seen finishing is retried rather than taken for expiry.
    not_found_grace: float = defaults.FILE_NOT_FOUND_GRACE

    def check_host(self, url: str) -> None:
        try:
            parsed = urlsplit(url)
            host = parsed.hostname or ""
        except ValueError:
            raise OutputHostRefused(f"output URL {url!r} cannot be read as a URL") from None
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
_NAME_LIMIT = 120  # characters: well inside every file system's 255 bytes, with room for "-2" and ".part"

# Extensions for the media types outputs come in; others (``application/octet-stream``…) say nothing.
MEDIA_SUFFIXES = {
    "video/mp4": ".mp4",
    "video/webm": ".webm",
    "video/quicktime": ".mov",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "audio/mpeg": ".mp3",
    "audio/mp3": ".mp3",
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "audio/wave": ".wav",
    "audio/ogg": ".ogg",
    "audio/flac": ".flac",
    "audio/aac": ".aac",
    "audio/mp4": ".m4a",
}
KIND_SUFFIXES = {"video": ".mp4", "image": ".png", "audio": ".mp3"}


def file_names(urls: list[str]) -> list[str]:
    """Safe, distinct file names for a result's URLs (``output.mp4``, ``output-2.mp4``…). A name
    without an extension (``output``) stays without one, distinct from every other name's stem, so
    that the extension :func:`download` adds cannot make two names one."""
    names: list[str] = []
    for index, url in enumerate(urls):
        base = PurePosixPath(unquote(urlsplit(url).path)).name
        base = _UNSAFE.sub("_", base).lstrip(".") or f"output-{index + 1}"
        stem, dot, suffix = base.rpartition(".")
        if not dot:
            stem, suffix = base, ""
        if len(base) > _NAME_LIMIT:
            suffix = suffix[:16]
            stem = stem[: _NAME_LIMIT - len(suffix) - 1]
            base = f"{stem}.{suffix}" if suffix else stem
        candidate, n = base, 1
        while _clashes(candidate, names):
            n += 1
            candidate = f"{stem}-{n}.{suffix}" if suffix else f"{stem}-{n}"
        names.append(candidate)
    return names


def _clashes(name: str, names: list[str]) -> bool:
    """Whether ``name`` is taken: the same name, or the same stem where one of the two has no
    extension yet (``output`` may become ``output.png``)."""
    stem = name.rpartition(".")[0] or name
    for other in names:
        bare = "." not in name or "." not in other
        if other == name or (bare and stem == (other.rpartition(".")[0] or other)):
            return True
    return False


def named_for(target: Path, content_type: str | None, kind: str | None) -> Path:
    """``target`` with an extension, if its name has none: from the content type, else the kind."""
    if "." in target.name:
        return target
    media = (content_type or "").partition(";")[0].strip().lower()
    suffix = MEDIA_SUFFIXES.get(media) or KIND_SUFFIXES.get(kind or "", "")
    return target.with_name(target.name + suffix)


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
    not_found_grace: float = 0.0,
    kind: str | None = None,
) -> Downloaded:
    """Fetch ``url`` into ``target`` completely, or raise; never leaves a partial file at ``target``.
    A ``target`` without an extension gets one (:func:`named_for`; ``kind`` is what the model
    makes): the file's path is the one returned.

    For ``not_found_grace`` seconds from now a 404 is retried (within the retry policy's attempts);
    after that it raises :class:`RequestNotFound` (the outputs expired)."""
    fsync = fsync or Fsync()
    config.check_host(url)
    timeout = Timeouts(config.connect_timeout, config.stall_seconds)
    grace_until = time.monotonic() + not_found_grace

    def worth_repeating(error: BaseException) -> bool:
        if isinstance(error, RequestNotFound):
            return time.monotonic() < grace_until
        return is_transient(error)

    async def once() -> Downloaded:
        digest = hashlib.sha256()
        size = 0
        try:
            async with http.stream(url, timeout=timeout) as response:
                if response.status == 404:
                    raise RequestNotFound(
                        f"output {url} answered 404 (not there yet, or expired)", http_status=404
                    )
                if response.status >= 400:
                    raise error_from_answer(response.status, None, response.headers)
                # Content-Length counts encoded bytes: compare it only where nothing was encoded.
                encoded = response.headers.get("content-encoding", "identity") != "identity"
                expected = None if encoded else _length(response.headers.get("content-length"))
                path = named_for(target, response.headers.get("content-type"), kind)
                # fsync is ours (it may go to a thread), before the file is renamed into place.
                with written_whole(path, sync=False) as handle:
                    async for chunk in response.chunks():
                        handle.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
                    if expected is not None and expected != size:
                        raise TransportError(f"got {size} of {expected} bytes")
                    handle.flush()
                    await fsync(handle.fileno())
        except TransportError as exc:
            raise TransportError(f"download of {url}: {exc}") from None
        return Downloaded(path, size, digest.hexdigest(), path.stat().st_mtime_ns)

    return await call_with_retry(once, config.retry, retryable=worth_repeating, on_retry=on_retry)


def _length(value: str | None) -> int | None:
    """A ``Content-Length`` to check the body against; ``None`` where it is missing or not a number."""
    text = (value or "").strip()
    return int(text) if text.isdigit() else None


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
