"""Reading RunComfy's whole model catalog: every page of ``GET /v1/models?include_schema=true``.

How the pages link is not documented, so the reader follows whatever an answer carries, in this
order: a ``next_cursor`` (unless ``has_more`` is false), sent back as ``cursor=``; a ``next`` URL
(or ``next_url``, ``next_page_url``, ``links.next``), followed only on the API's own base URL, since
the token goes nowhere else; page numbers (``page`` with ``total_pages``, ``pages`` or
``page_count``, or with ``has_more``), asking for ``page=N+1``. An answer that carries none of them
is the last page.

It never loops: a cursor, URL or page asked for before, a page without a model not seen before, or
:data:`MAX_PAGES` pages end it, and the read is then marked incomplete with a note saying why (an
incomplete read adds and updates models but removes none; see :mod:`runner.catalog.synced`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

from ..catalog.normalise import catalog_entries
from .client import RunComfyClient

MAX_PAGES = 500
CATALOG_PATH = "/v1/models"
_QUERY = {"include_schema": "true"}

Page = tuple[str, str]  # (path, query) of one catalog page


@dataclass(frozen=True)
class CatalogRead:
    """What the pages held: every entry once (the first of two with one ``model_id``), how many
    pages were read, whether they ended cleanly, and what did not go as documented."""

    entries: list[Any]
    pages: int
    complete: bool
    notes: list[str] = field(default_factory=list)


async def read_catalog(client: RunComfyClient, *, max_pages: int = MAX_PAGES) -> CatalogRead:
    """Every page of the catalog, through ``client`` (its retries cover each page)."""
    page: Page = (CATALOG_PATH, urlencode(_QUERY))
    asked = {page}
    entries: list[Any] = []
    seen: set[str] = set()
    notes: list[str] = []
    pages, complete = 0, False
    while True:
        answer = await client.catalog_page(*page)
        pages += 1
        found, problems = catalog_entries(answer)
        notes.extend(f"page {pages}: {p}" for p in problems)
        new = 0
        for entry in found:
            model_id = entry.get("model_id") if isinstance(entry, Mapping) else None
            key = model_id if isinstance(model_id, str) else json.dumps(entry, sort_keys=True, default=str)
            if key not in seen:
                seen.add(key)
                entries.append(entry)
                new += 1
        following, why = next_page(answer, page, client.base_url)
        if following is None:
            if why:
                notes.append(f"page {pages}: {why}")
            complete = why is None
            break
        if new == 0:
            notes.append(f"page {pages} held no model not seen before; stopped there")
        elif following in asked:
            notes.append(f"page {pages} links back to a page read before; stopped there")
        elif pages >= max_pages:
            notes.append(f"stopped after {max_pages} pages")
        else:
            asked.add(following)
            page = following
            continue
        break
    total = answer.get("total") if isinstance(answer, Mapping) else None
    if complete and isinstance(total, int) and not isinstance(total, bool) and total > len(entries):
        notes.append(f"the catalog says it holds {total} models, but its pages held {len(entries)}")
        complete = False
    return CatalogRead(entries, pages, complete, notes)


def next_page(answer: Any, current: Page, base_url: str) -> tuple[Page | None, str | None]:
    """The page after ``answer`` (None: it was the last) and, when it cannot be followed, why."""
    if not isinstance(answer, Mapping):
        return None, None  # a bare list is the whole catalog
    has_more = answer.get("has_more")
    cursor = answer.get("next_cursor")
    if cursor not in (None, "") and has_more is not False:
        return (CATALOG_PATH, urlencode({**_QUERY, "cursor": str(cursor)})), None
    link = _next_link(answer)
    if link and has_more is not False:
        return _same_api(link, current, base_url)
    page = answer.get("page", answer.get("current_page"))
    if isinstance(page, int) and not isinstance(page, bool):
        total = next(
            (
                answer[k]
                for k in ("total_pages", "pages", "page_count", "last_page")
                if isinstance(answer.get(k), int) and not isinstance(answer.get(k), bool)
            ),
            None,
        )
        if (total is not None and page < total) or (total is None and has_more is True):
            return (CATALOG_PATH, urlencode({**_QUERY, "page": page + 1})), None
        return None, None
    if has_more is True:
        return None, "it says more pages follow but not how to reach them"
    return None, None


def _next_link(answer: Mapping[str, Any]) -> str | None:
    links = answer.get("links")
    for value in (
        answer.get("next"),
        answer.get("next_url"),
        answer.get("next_page_url"),
        links.get("next") if isinstance(links, Mapping) else None,
    ):
        if isinstance(value, Mapping):
            value = value.get("href") or value.get("url")
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _same_api(link: str, current: Page, base_url: str) -> tuple[Page | None, str | None]:
    """A ``next`` link as a page of the API, or why it is not followed."""
    base = base_url.rstrip("/")
    here = f"{base}{current[0]}?{current[1]}"
    resolved = urljoin(here, link)
    if not resolved.startswith(base + "/"):
        host = urlsplit(resolved).netloc or resolved
        return None, f"its next page is at {host}, outside the API's base URL: not followed (the token stays)"
    path, _, query = resolved[len(base) :].partition("?")
    return (path, query.partition("#")[0]), None
