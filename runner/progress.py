"""What the user sees while a run goes on: notable events, line by line (or as JSON lines).

Quiet by default on success: routine events (submitted, running, succeeded) are shown only with
``--verbose``; retries, slow-downs, failures and unknowns always are.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from .errors import redact

NOTABLE = {"failed", "unknown", "expired", "stopping", "concurrency", "unknown_status", "held",
           "download_error", "resubmit", "refetch"}
ROUTINE = {"submitted", "queued", "running", "succeeded", "retry", "poll_error", "start", "finish"}


class LineLog:
    """An event sink that prints one line per notable event to ``stream``."""

    def __init__(self, stream: TextIO | None = None, *, verbose: bool = False, json_lines: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.verbose = verbose
        self.json_lines = json_lines

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if self.json_lines:
            self.stream.write(redact(json.dumps(event, default=str)) + "\n")
            return
        if kind not in NOTABLE and not (self.verbose and kind in ROUTINE):
            return
        details = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("event", "time") and v is not None)
        self.stream.write(redact(f"[{kind}] {details}") + "\n")
        self.stream.flush()
