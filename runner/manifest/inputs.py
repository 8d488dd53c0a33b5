"""Local files named as inputs, turned into the ``data:`` URIs RunComfy accepts inline.

RunComfy fetches file inputs from public URLs and has no upload endpoint, but it takes images inline
as ``data:image/<type>;base64,…`` (about 6 MiB each, 64 MiB per request). So a manifest may say
``image: ./refs/woman.png`` in any field its model schema marks with ``x-file``: a small PNG, JPEG,
WebP or GIF becomes a data URI; a video, an audio file, a larger image or any other file is a problem
that says a public URL is needed. The type comes from the file's first bytes, never its name. An
inlined image is also held to the rules the catalog states for its field (``x-checks``: file size,
width/height, pixel bounds), measured from its bytes and header, since RunComfy would refuse it only
after the run started. Each file is read once per manifest however many jobs name it, and the same
bytes always give the same URI, so job fingerprints do not change from one load to the next.
"""

from __future__ import annotations

import base64
import os
import re
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..catalog.models import FileCheck
from ..errors import LocalInputError

MiB = 1024 * 1024
MAX_INLINE_URI = 6 * MiB
MAX_INLINE_REQUEST = 64 * MiB

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_WINDOWS_DRIVE = re.compile(r"[A-Za-z]:[\\/]")
_REMOTE = ("https://", "http://", "data:")


def image_type(head: bytes) -> str | None:
    """``png``, ``jpeg``, ``webp`` or ``gif`` from a file's first bytes; ``None`` for anything else."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    for signature, kind in _SIGNATURES:
        if head.startswith(signature):
            return kind
    return None


def is_local_path(value: str) -> bool:
    """True for ``./a.png``, ``refs/a.png`` or ``/abs/a.png``; false for anything with a URL scheme."""
    return bool(value) and (_SCHEME.match(value) is None or _WINDOWS_DRIVE.match(value) is not None)


def _max_raw_bytes(kind: str) -> int:
    prefix = len(f"data:image/{kind};base64,")
    return (MAX_INLINE_URI - prefix) // 4 * 3


def data_uri(path: Path, shown: str | None = None) -> str:
    """The file as a ``data:image/…;base64,`` URI; :class:`LocalInputError` says why it cannot be."""
    kind, body = read_image(path, shown)
    return f"data:image/{kind};base64," + base64.b64encode(body).decode("ascii")


def read_image(path: Path, shown: str | None = None) -> tuple[str, bytes]:
    """The image's type (``png``…) and bytes, if it can be sent inline; :class:`LocalInputError`
    says why it cannot be."""
    shown = shown or str(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise LocalInputError(f"{shown}: no such file (looked for {path})") from None
    except (OSError, ValueError) as error:  # ValueError: a NUL byte in the path
        reason = getattr(error, "strerror", None) or error
        raise LocalInputError(f"{shown}: cannot be read ({reason})") from None
    if stat.S_ISDIR(info.st_mode):
        raise LocalInputError(f"{shown}: is a folder, not an image file")
    if not stat.S_ISREG(info.st_mode):
        raise LocalInputError(f"{shown}: is not a regular file")
    limit = _max_raw_bytes("jpeg")
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
            kind = image_type(head)
            if kind is None:
                raise LocalInputError(
                    f"{shown}: is not a PNG, JPEG, WebP or GIF image; other files need a public https URL"
                )
            limit = _max_raw_bytes(kind)
            if info.st_size > limit:
                raise _too_large(shown, info.st_size, limit)
            body = head + handle.read(limit + 1 - len(head))
    except OSError as error:
        raise LocalInputError(f"{shown}: cannot be read ({error.strerror or error})") from None
    if len(body) > limit:
        raise _too_large(shown, len(body), limit)
    return kind, body


def image_facts(kind: str, body: bytes) -> dict[str, float]:
    """What the catalog's file rules measure of an image: ``file_size_mb`` (10^6 bytes), and where
    its header says them, ``width_px``, ``height_px`` and ``aspect_ratio`` (width / height)."""
    facts = {"file_size_mb": len(body) / 1e6}
    size = image_size(kind, body)
    if size is not None and size[0] > 0 and size[1] > 0:
        facts.update(width_px=size[0], height_px=size[1], aspect_ratio=size[0] / size[1])
    return facts


def image_size(kind: str, body: bytes) -> tuple[int, int] | None:
    """(width, height) in pixels from an image's header, or None where it cannot be read."""
    try:
        if kind == "png" and body[12:16] == b"IHDR":
            return int.from_bytes(body[16:20], "big"), int.from_bytes(body[20:24], "big")
        if kind == "gif":
            return int.from_bytes(body[6:8], "little"), int.from_bytes(body[8:10], "little")
        if kind == "webp":
            return _webp_size(body)
        if kind == "jpeg":
            return _jpeg_size(body)
    except IndexError:
        return None
    return None


def _webp_size(body: bytes) -> tuple[int, int] | None:
    chunk = body[12:16]
    if chunk == b"VP8 " and body[23:26] == b"\x9d\x01\x2a":
        return int.from_bytes(body[26:28], "little") & 0x3FFF, int.from_bytes(body[28:30], "little") & 0x3FFF
    if chunk == b"VP8L" and body[20] == 0x2F:
        bits = int.from_bytes(body[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return int.from_bytes(body[24:27], "little") + 1, int.from_bytes(body[27:30], "little") + 1
    return None


# JPEG markers that start a frame (SOF0-SOF15, but not DHT, JPG and DAC, which share the range).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(body: bytes) -> tuple[int, int] | None:
    at = 2
    while at + 9 < len(body):
        if body[at] != 0xFF:
            return None
        marker = body[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            at += 2
            continue
        if marker in _SOF:
            return int.from_bytes(body[at + 7 : at + 9], "big"), int.from_bytes(body[at + 5 : at + 7], "big")
        at += 2 + int.from_bytes(body[at + 2 : at + 4], "big")
    return None


def _too_large(shown: str, size: int, limit: int) -> LocalInputError:
    return LocalInputError(
        f"{shown}: is {size / MiB:.1f} MiB; images over {limit / MiB:.1f} MiB cannot be sent inline "
        f"({MAX_INLINE_URI // MiB} MiB once encoded): give a public https URL instead"
    )


class LocalFiles:
    """Turns local paths in a job's file fields into data URIs, each file read once."""

    def __init__(self, base: Path, read: dict[str, tuple[int, int]] | None = None) -> None:
        self.base = base
        self._seen: dict[str, tuple[str, dict[str, float]] | LocalInputError] = {}
        # Every file read, with its size and mtime taken before reading (a file changed while it was
        # read then looks changed next time, never the other way round): see ``snapshot.py``.
        self.read: dict[str, tuple[int, int]] = {} if read is None else read

    def inline(self, value: str, kind: str) -> str:
        """The data URI for the local file ``value`` (relative to ``base``) of the given kind."""
        return self._inline(value, kind)[0]

    def _inline(self, value: str, kind: str) -> tuple[str, dict[str, float]]:
        """The data URI and the measured facts (:func:`image_facts`) of the local file ``value``."""
        if kind != "image":
            what = {"video": "videos", "audio": "audio files"}.get(kind, f"{kind} files")
            raise LocalInputError(
                f"{value}: a local {kind} cannot be sent: RunComfy fetches {what} from a public http(s) URL "
                "(it has no upload endpoint)"
            )
        full = os.path.normpath(self.base / os.path.expanduser(value))
        known = self._seen.get(full)
        if known is None:
            try:
                st = os.stat(full)
                self.read[full] = (st.st_size, st.st_mtime_ns)
            except (OSError, ValueError):  # ValueError: a NUL byte in the path
                pass  # read_image says why
            try:
                image, body = read_image(Path(full), value)
                uri = f"data:image/{image};base64," + base64.b64encode(body).decode("ascii")
                known = (uri, image_facts(image, body))
            except LocalInputError as error:
                known = error
            self._seen[full] = known
        if isinstance(known, LocalInputError):
            raise known
        return known

    def inline_input(
        self,
        input: dict[str, Any],
        file_fields: Mapping[str, str],
        file_checks: Mapping[str, Sequence[FileCheck]] | None = None,
    ) -> tuple[dict[str, Any], list[tuple[tuple[str | int, ...], str]]]:
        """The input with local files inlined (the same dict when there are none) and the problems:
        files that cannot be sent, and files that break their field's ``file_checks``.

        Each problem is ``(path inside the input, message)``.
        """
        problems: list[tuple[tuple[str | int, ...], str]] = []
        changed: dict[str, Any] = {}
        checks = file_checks or {}
        for name, kind in file_fields.items():
            value = input.get(name)
            rules = checks.get(name, ())
            if isinstance(value, str):
                if not value.startswith(_REMOTE) and is_local_path(value):
                    changed[name] = self._inline_one(value, kind, (name,), problems, rules)
            elif isinstance(value, list) and any(
                isinstance(v, str) and not v.startswith(_REMOTE) and is_local_path(v) for v in value
            ):
                changed[name] = [
                    self._inline_one(v, kind, (name, i), problems, rules)
                    if isinstance(v, str) and not v.startswith(_REMOTE) and is_local_path(v)
                    else v
                    for i, v in enumerate(value)
                ]
        if not changed:
            return input, problems
        result = {**input, **changed}
        inline_bytes = sum(len(v) for v in _file_values(result, file_fields) if v.startswith("data:"))
        if inline_bytes > MAX_INLINE_REQUEST:
            problems.append(
                (
                    (),
                    f"the images sent inline add up to {inline_bytes / MiB:.1f} MiB, more than "
                    f"RunComfy's {MAX_INLINE_REQUEST // MiB} MiB per request: give public URLs",
                )
            )
        return result, problems

    def _inline_one(
        self,
        value: str,
        kind: str,
        path: tuple[str | int, ...],
        problems: list[tuple[tuple[str | int, ...], str]],
        rules: Sequence[FileCheck] = (),
    ) -> str:
        try:
            uri, facts = self._inline(value, kind)
        except LocalInputError as error:
            problems.append((path, str(error)))
            return value
        for rule in rules:
            broken = rule.problem(facts)
            if broken:
                problems.append((path, f"{value}: {broken}"))
        return uri


def _file_values(input: Mapping[str, Any], file_fields: Mapping[str, str]) -> list[str]:
    out: list[str] = []
    for name in file_fields:
        value = input.get(name)
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, list):
            out.extend(v for v in value if isinstance(v, str))
    return out
