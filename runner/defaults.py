"""Every default of a run, written once.

The config classes (``BatchOptions``, ``RunSettings``, ``ApiConfig``, ``RetryPolicy``,
``DownloadConfig``) take their field defaults from here, and the command line's help text prints
them from here, so a default changed in this file is changed everywhere, ``--help`` included. It sits
at the bottom of the layers (it imports nothing) so that every part can read it.

Precedence, applied by ``runner.batch.configure``: a command-line flag (or a ``BatchOptions`` field
set by a library caller), then the environment variable, then the manifest, then the value here.
Durations are seconds.
"""

from __future__ import annotations

# -- where the API is ----------------------------------------------------------------------------
BASE_URL = "https://model-api.runcomfy.net"
TOKEN_ENV = "RUNCOMFY_API_TOKEN"
BASE_URL_ENV = "RUNCOMFY_BASE_URL"

# -- each request ---------------------------------------------------------------------------------
CONNECT_TIMEOUT = 10.0  # --connect-timeout: API calls and downloads alike
READ_TIMEOUT = 60.0  # --read-timeout: the longest silence in an API answer
STALL_TIMEOUT = 60.0  # --stall-timeout: the longest silence in a download before it is restarted

# -- retries of a call that is safe to repeat (status, result, cancel, download) --------------------
RETRY_ATTEMPTS = 8  # --retries
RETRY_MAX_SECONDS = 300.0  # --retry-max-time
RETRY_BASE_DELAY = 0.5  # full jitter: uniform in [0, min(max delay, base * 2**attempt)]
RETRY_MAX_DELAY = 30.0

# -- retries of a submit answered 429 (it was surely not taken; one that never connected waits for the
# API to answer instead: engine/outage.py); fewer than a read's, and why: ``RetryPolicy.for_submit`` --
SUBMIT_RETRY_ATTEMPTS = 6
SUBMIT_RETRY_MAX_SECONDS = 120.0

# -- an API that does not answer (an outage) --------------------------------------------------------
# --outage-max-time: how long a run waits for the API to answer again before it stops (exit 10). None:
# as long as --retry-max-time, the patience the user gave one call.
OUTAGE_MAX_SECONDS: float | None = None
# Paid submits on the wire at once. A submit that meets an outage may have been accepted (it becomes
# unknown), so this is what an outage can cost at most; 4 at a time still carry hundreds a second.
SUBMITS_ON_WIRE = 4
# Trial submits (one at a time, after the API answered reads again) whose outcome is unknown in a row
# before the run stops: RunComfy answers, but not its submits, and each trial may be paid.
OUTAGE_TRIALS = 2

# -- answers that lag or puzzle: how long the reader's grace rules last (docs/api-answers.md) -------
STATUS_NOT_FOUND_GRACE = 30.0  # a 404 on a poll this soon after this run's submit is asked again
FILE_NOT_FOUND_GRACE = 60.0  # a 404 on a file of a job this run saw finish is retried this long
EMPTY_RESULT_POLLS = 5  # `completed` without outputs is polled again this many times (0.5 s, doubling)
UNKNOWN_STATUS_PATIENCE = 1800.0  # a job answering only words nobody knows is given up after this...
UNKNOWN_STATUS_MIN_POLLS = 10  # ...and at least this many such answers

# -- one run --------------------------------------------------------------------------------------
JOB_TIMEOUT = 2 * 3600.0  # --job-timeout: give up on a job this long after its submit
AUTO_RESUBMIT_FAILED = 0  # --auto-resubmit-failed: each resubmission is paid
# API calls at once (lowered on 429s, raised again after). 8 at a time carry ~40 calls a second at
# RunComfy's ~200 ms round trip, several times what a full account needs (about 3 per job).
HTTP_CONCURRENCY = 8
DOWNLOAD_CONCURRENCY = 4
FLUSH_INTERVAL = 0.25  # how often the journal's pending writes are committed
