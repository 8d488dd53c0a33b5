"""Each event of a run as the one line a person reads (the live display's log, plain mode, ``-v``)."""

from __future__ import annotations

from ..engine.events import Event, EventKind
from ..engine.outage import span
from ..engine.states import JobState


def money(usd: float) -> str:
    return f"${usd:,.2f}"


def describe(event: Event) -> str:
    """One human line for an event (without a time stamp)."""
    kind = event["event"]
    job = event.get("job_id")
    error = event.get("error")
    twin = f" (same request as {event['twin_of']})" if event.get("twin_of") else ""
    if kind == EventKind.START:
        counts = event.get("counts") or {}
        chained = f" ({event['chained']} once the jobs they need are done)" if event.get("chained") else ""
        left = f"; {event['left_out']} left out by --only/--limit" if event.get("left_out") else ""
        return (
            f"starting: {event.get('jobs', 0)} job(s); {event.get('to_submit', 0)} to submit{chained}, "
            f"{event.get('reattached', 0)} re-attached, {event.get('collecting', 0)} to download, "
            f"{counts.get(JobState.SUCCEEDED, 0)} already done{left}"
        )
    if kind == EventKind.SUBMITTED:
        return f"{job}: submitted as {event.get('request_id')}"
    if kind in (EventKind.QUEUED, EventKind.RUNNING):
        return f"{job}: {kind} at RunComfy"
    if kind == EventKind.COMPLETED:
        cost = event.get("cost_usd")
        paid = f" ({money(cost)})" if cost is not None else ""
        return f"{job}: finished at RunComfy{paid}, downloading"
    if kind == EventKind.SUCCEEDED:
        return f"{job}: done{twin}"
    if kind == EventKind.FAILED:
        where = " at submit" if event.get("stage") == "submit" else ""
        return f"{job}: failed{where}{twin}" + (f": {error}" if error else "")
    if kind == EventKind.UNKNOWN:
        return (
            f"{job}: submit outcome unknown (it may have been accepted and billed); not resubmitted "
            f"unless you pass --resubmit-unknown" + (f": {error}" if error else "")
        )
    if kind in (EventKind.EXPIRED, EventKind.CANCELLED):
        return f"{job}: {kind}{twin}" + (f": {error}" if error else "")
    if kind == EventKind.HELD:
        estimate = event.get("estimate_usd")
        guess = f" (estimate {money(estimate)})" if estimate is not None else ""
        return f"{job}: held by the budget cap{guess}"
    if kind == EventKind.READY:
        return f"{job}: the output of {', '.join(event.get('after') or [])} is ready; sending it next"
    if kind == EventKind.BLOCKED:
        return f"{job}: blocked, not sent" + (f": {error}" if error else "")
    if kind == EventKind.RETRY:
        who = f"{job}: " if job else ""
        delay = event.get("delay")
        after = f" in {delay:.1f}s" if isinstance(delay, int | float) else ""
        attempt = f" (attempt {event['attempt']})" if event.get("attempt") else ""
        return f"{who}retrying{after}{attempt}: {error}"
    if kind == EventKind.POLL_ERROR:
        return f"{job}: poll failed, will poll again: {error}"
    if kind == EventKind.CONCURRENCY:
        return f"HTTP concurrency now {event.get('http')}: {event.get('reason')}"
    if kind == EventKind.STOPPING:
        return f"stopping: {event.get('reason')}"
    if kind == EventKind.OUTAGE:
        gives_up_in = event.get("gives_up_in")
        more = f", retrying for {span(gives_up_in)} more" if isinstance(gives_up_in, int | float) else ""
        return f"{event.get('problem')}{more} (submits wait)"
    if kind == EventKind.API_BACK:
        unknown = event.get("unknown") or 0
        cost = f"; {unknown} submit(s) of it unknown" if unknown else ""
        return f"{event.get('host')} answers again after {span(event.get('after') or 0)}{cost}; going on"
    if kind == EventKind.INTERNAL_ERROR:
        return f"{job}: {error}" if job else str(error)
    if kind == EventKind.UNKNOWN_STATUS:
        return f"{job}: RunComfy answered an unknown status {event.get('status')!r}; treated as still running"
    if kind == EventKind.DOWNLOAD_ERROR:
        return f"{job}: download failed; it will be downloaded on the next run: {error}"
    if kind == EventKind.RESUBMIT:
        return f"{job}: resubmitting after a failure (resubmit {event.get('attempt')}; each one is paid)"
    if kind == EventKind.REFETCH:
        return f"{job}: output missing or changed on disk; downloading it again"
    if kind == EventKind.PRICE:
        unit = event.get("unit")
        per = f" per {unit}" if unit else ""
        return f"price of {event.get('model')} from the API: ${event.get('usd')}{per}"
    if kind == EventKind.FINISH:
        counts = event.get("counts") or {}
        parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        return f"finished ({parts}); exit code {event.get('exit_code')}"
    details = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("event", "time") and v is not None)
    return f"{kind}: {details}" if details else str(kind)
