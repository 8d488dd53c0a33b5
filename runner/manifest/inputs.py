"""Local files named as inputs, turned into the ``data:`` URIs RunComfy accepts inline.

RunComfy fetches file inputs from public URLs and has no upload endpoint, but it takes images inline
as ``data:image/<type>;base64,…`` (about 6 MiB each, 64 MiB per request). So a manifest may say
``image: ./refs/woman.png`` in any field its model schema marks with ``x-file``: a small PNG, JPEG,
WebP or GIF becomes a data URI; a video, a larger image or any other file is a problem that says a
public URL is needed. The type comes from the file's first bytes, never its name. Each file is read
once per manifest however many jobs name it, and the same bytes always give the same URI, so job
fingerprints do not change from one load to the next.
"""

from __future__ import annotations

import base64
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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
    return f"data:image/{kind};base64," + base64.b64encode(body).decode("ascii")


def _too_large(shown: str, size: int, limit: int) -> LocalInputError:
    return LocalInputError(
        f"{shown}: is {size / MiB:.1f} MiB; images over {limit / MiB:.1f} MiB cannot be sent inline "
        f"({MAX_INLINE_URI // MiB} MiB once encoded): give a public https URL instead"
    )


class LocalFiles:
    """Turns local paths in a job's file fields into data URIs, each file read once."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._seen: dict[str, str | LocalInputError] = {}
        # Every file read, with its size and mtime taken before reading (a file changed while it was
        # read then looks changed next time, never the other way round): see ``snapshot.py``.
        self.read: dict[str, tuple[int, int]] = {}

    def inline(self, value: str, kind: str) -> str:
        """The data URI for the local file ``value`` (relative to ``base``) of the given kind."""
        if kind != "image":
            raise LocalInputError(
                f"{value}: a local {kind} cannot be sent: RunComfy fetches {kind}s from a public http(s) URL "
                "(it has no upload endpoint)"
            )
        full = os.path.normpath(self.base / os.path.expanduser(value))
        known = self._seen.get(full)
        if known is None:
            try:
                st = os.stat(full)
                self.read[full] = (st.st_size, st.st_mtime_ns)
            except (OSError, ValueError):  # ValueError: a NUL byte in the path
                pass  # data_uri says why
            try:
                known = data_uri(Path(full), value)
            except LocalInputError as error:
                known = error
            self._seen[full] = known
        if isinstance(known, LocalInputError):
            raise known
        return known

    def inline_input(
        self, input: dict[str, Any], file_fields: Mapping[str, str]
    ) -> tuple[dict[str, Any], list[tuple[tuple[str | int, ...], str]]]:
        """The input with local files inlined (the same dict when there are none) and the problems.

        Each problem is ``(path inside the input, message)``.
        """
        problems: list[tuple[tuple[str | int, ...], str]] = []
        changed: dict[str, Any] = {}
        for name, kind in file_fields.items():
            value = input.get(name)
            if isinstance(value, str):
                if not value.startswith(_REMOTE) and is_local_path(value):
                    changed[name] = self._inline_one(value, kind, (name,), problems)
            elif isinstance(value, list) and any(
                isinstance(v, str) and not v.startswith(_REMOTE) and is_local_path(v) for v in value
            ):
                changed[name] = [
                    self._inline_one(v, kind, (name, i), problems)
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
    ) -> str:
        try:
            return self.inline(value, kind)
        except LocalInputError as error:
            problems.append((path, str(error)))
            return value


def _file_values(input: Mapping[str, Any], file_fields: Mapping[str, str]) -> list[str]:
    out: list[str] = []
    for name in file_fields:
        value = input.get(name)
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, list):
            out.extend(v for v in value if isinstance(v, str))
    return out
