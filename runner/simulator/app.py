"""The simulator as an ASGI app: RunComfy's Model API protocol over a :class:`.Simulation`.

One app serves both ways: in-process through ``httpx.ASGITransport`` (unit tests) and on loopback
through uvicorn (:mod:`.server`; end-to-end tests, benchmarks, the demo). Every URL it hands out
(``status_url``, output files) is built from the incoming request's own base URL, so both work.

Every API and file request first passes :func:`_arrive`: it is counted, may be slowed, may be answered
by a fault before anything is done, and (except for files, which a CDN serves publicly) must carry
the bearer token. ``/_sim/*`` are the simulator's own controls: no token, no faults, not counted.

Every answer of the protocol is written by the simulation's :class:`.Wire`: the documented form, or the
answer shapes the config names (:mod:`.shapes`).
"""

from __future__ import annotations

import hmac
import json
import re
import time
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..catalog.models import Catalog
from ..errors import RunnerError
from .account import COMPLETED, FAILED, FINISHED, Job
from .config import SimulatorConfig
from .faults import DroppedConnection, TruncatedBody
from .outputs import MEDIA_TYPES, expected_output_bytes, output_index, output_name
from .shapes import Wire
from .simulation import Clock, Simulation

_SERVER_ERRORS = (500, 502, 503)
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


def error(
    status: int,
    error_code: int,
    message: str,
    detail: Any = None,
    headers: Any = None,
    wire: Wire | None = None,
) -> Response:
    """An error answer in RunComfy's shape (the 5xx and 429 ones as ``wire`` writes those)."""
    faulty = wire.fault_body(status) if wire is not None and (status == 429 or status >= 500) else None
    if faulty is not None:
        return Response(faulty[0], status, headers=headers, media_type=faulty[1])
    body = {"error_code": error_code, "error_message": message, "detail": detail}
    return JSONResponse(wire.refusal(body) if wire else body, status_code=status, headers=headers)


def _answer(request: Request, body: dict[str, Any], status: int = 200) -> JSONResponse:
    """A successful answer, as the simulation's wire writes it."""
    return JSONResponse(_sim(request).wire.answer(body), status_code=status)


def _sim(request: Request) -> Simulation:
    return request.app.state.sim  # type: ignore[no-any-return]


def _refuse(request: Request, status: int, error_code: int, message: str, detail: Any = None) -> Response:
    _sim(request).refuse(error_code)
    return error(status, error_code, message, detail, wire=_sim(request).wire)


def _server_error(sim: Simulation) -> Response:
    status = sim.choose(_SERVER_ERRORS)
    if status == 502 and sim.wire.fault_body(502) is None:  # a gateway in front of the API: not JSON
        return Response("<html><body><h1>502 Bad Gateway</h1></body></html>", 502, media_type="text/html")
    return error(status, status * 1000 + 1, "simulated server error", wire=sim.wire)


async def _arrive(request: Request, endpoint: str, *, auth: bool = True) -> Response | None:
    """Count the request, apply slowness and the faults that come before anything; check the token."""
    sim = _sim(request)
    slow, fault = sim.arrive(endpoint)
    if slow:
        await anyio.sleep(sim.config.slow_seconds)
    if fault == "drop":
        return DroppedConnection()
    if fault == "5xx":
        return _server_error(sim)
    if fault == "429":
        seconds = str(sim.config.retry_after_seconds)
        return error(429, 429001, "rate limited (simulated)", headers={"Retry-After": seconds}, wire=sim.wire)
    if fault == "429_bare":
        return error(429, 429001, "rate limited (simulated)", wire=sim.wire)
    if fault == "error_200":
        return error(200, 500001, "simulated error inside an HTTP 200 answer", wire=sim.wire)
    if not auth:
        return None
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return _refuse(request, 401, 401001, "unauthorized: no bearer token")
    if token in sim.config.revoked_tokens:
        return _refuse(request, 400, 400004, "the token is expired or revoked")
    if not hmac.compare_digest(token.encode(), sim.config.token.encode()):
        return _refuse(request, 401, 401001, "unauthorized: unknown token")
    return None


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _urls(base: str, request_id: str) -> dict[str, str]:
    root = f"{base}/v1/requests/{request_id}"
    return {"status_url": f"{root}/status", "result_url": f"{root}/result"}


def _status_body(request: Request, job: Job, position: int | None) -> dict[str, Any]:
    sim = _sim(request)
    wire = sim.wire
    body: dict[str, Any] = {"request_id": job.request_id, "status": wire.word(job.state)}
    if job.state not in FINISHED and sim.strikes("unknown_status", _endpoint(request)):
        body["status"] = wire.word(sim.config.unknown_status_word)
    elif position is not None or (job.state not in FINISHED and wire.always_queue_position()):
        body["queue_position"] = wire.number(position)
    body.update(_urls(_base(request), job.request_id))
    return body


def _endpoint(request: Request) -> str:
    return request.url.path.rsplit("/", 1)[-1]  # status or result


async def _job(request: Request, endpoint: str, *, auth: bool = True) -> Response | tuple[Job, int | None]:
    answered = await _arrive(request, endpoint, auth=auth)
    if answered is not None:
        return answered
    sim = _sim(request)
    job, position = sim.lookup(request.path_params["request_id"])
    if job is None:
        return _refuse(request, 404, 404001, "unknown or expired request id")
    if endpoint in ("status", "result") and sim.lags("status-404-grace", job.request_id, job.submitted_at):
        return error(404, 404001, "unknown or expired request id", wire=sim.wire)
    return job, position


async def submit(request: Request) -> Response:
    """POST /v1/models/{model_id}: validate, price and accept one request."""
    # The body is read first, as a server does before it starts work: a submit slowed by the "slow"
    # fault is then accepted even if its client goes away meanwhile (a runner killed mid-submit), as
    # RunComfy would. Reading it after the delay would drop it on the client's disconnect.
    body = await request.body()
    answered = await _arrive(request, "submit")
    if answered is not None:
        return answered
    sim, model_id = _sim(request), request.path_params["model_id"]
    spec = sim.catalog.get(model_id)
    if spec is None:
        return _refuse(request, 400, 400001, f"unknown model id {model_id!r}")
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        detail = [{"field": "", "message": "the request body is not a JSON object"}]
        return _refuse(request, 422, 422001, "the input does not match the model's schema", detail)
    problems = spec.check_input(payload)
    if problems:
        detail = [{"field": p.path, "message": p.message} for p in problems]
        return _refuse(request, 422, 422001, "the input does not match the model's schema", detail)
    usd = sim.prices.quote(model_id, payload, spec.defaults).usd
    cost_micros = round((usd or 0.0) * 1_000_000)
    if sim.over_balance(cost_micros):
        return _refuse(request, 400, 400002, "insufficient balance")
    job = sim.accept(model_id, payload, len(body), cost_micros)
    if sim.strikes("accepted_drop", "submit"):
        return DroppedConnection()
    if sim.strikes("accepted_5xx", "submit"):
        return _server_error(sim)
    urls = _urls(_base(request), job.request_id)
    cancel_url = urls["result_url"].removesuffix("result") + "cancel"
    accepted = {"request_id": job.request_id, **urls, "cancel_url": cancel_url}
    return _answer(request, accepted, sim.wire.submit_status)


async def status(request: Request) -> Response:
    """GET /v1/requests/{id}/status."""
    found = await _job(request, "status")
    if isinstance(found, Response):
        return found
    return _answer(request, _status_body(request, *found))


async def result(request: Request) -> Response:
    """GET /v1/requests/{id}/result: the outputs once finished, the live status (HTTP 200) until then."""
    found = await _job(request, "result")
    if isinstance(found, Response):
        return found
    job, position = found
    if job.state not in FINISHED:
        return _answer(request, _status_body(request, job, position))
    sim = _sim(request)
    wire = sim.wire
    body: dict[str, Any] = {"request_id": job.request_id, "status": wire.word(job.state)}
    if job.state == COMPLETED:
        urls = _output_urls(request, job)
        body["model_id"] = job.model_id
        late = sim.lags("output-late", job.request_id, job.finished_at)
        body["output"] = None if late else wire.output(urls, job.output_kind)
        wire.put_times(body, created_at=sim.wall(job.submitted_at), finished_at=sim.wall(job.finished_at))
    elif job.state == FAILED:
        body["error"] = wire.failure("the generation failed (simulated)")
    if request.query_params.get("include_cost", "").lower() in ("true", "1"):
        body["cost"] = wire.number(job.billed_micros / 1_000_000)
    return _answer(request, body)


async def cancel(request: Request) -> Response:
    """POST /v1/requests/{id}/cancel: only a queued request can be cancelled."""
    found = await _job(request, "cancel")
    if isinstance(found, Response):
        return found
    job = found[0]
    sim = _sim(request)
    outcome = sim.cancel(job)
    body = {
        "request_id": job.request_id,
        "status": sim.wire.word(job.state),
        "outcome": sim.wire.word(outcome),
    }
    return _answer(request, body)


async def price(request: Request) -> Response:
    """GET /v1/models/{model_id}: the model's price, from the simulator's price table."""
    answered = await _arrive(request, "price")
    if answered is not None:
        return answered
    sim, model_id = _sim(request), request.path_params["model_id"]
    if model_id not in sim.catalog:
        return _refuse(request, 400, 400001, f"unknown model id {model_id!r}")
    rule = sim.prices.models.get(model_id) or {}
    if not sim.config.serve_prices or not isinstance(rule.get("usd"), int | float):
        return _refuse(request, 404, 404001, f"no price for {model_id!r}")
    unit = rule.get("unit", "second")
    notes = [f"USD {rule['usd']} per {unit} of output"]
    for tier in rule.get("tiers", []):
        change = f"USD {tier['usd']}" if "usd" in tier else f"{tier.get('factor') or 'an unknown'} times that"
        notes.append(f"with {tier.get('name', tier['when'])}: {change} per {unit}")
    body = {"model_id": model_id, "base_price_usd": sim.wire.number(float(rule["usd"])), "price_unit": unit}
    return _answer(request, {**body, "pricing_note": "; ".join(notes)})


async def model_list(request: Request) -> Response:
    """GET /v1/models?include_schema=true: the models this simulator serves, a page at a time, linked
    as ``catalog_paging`` says (``cursor``: ``next_cursor`` and ``has_more``; ``next-url``: a ``next``
    URL; ``page``: ``page`` and ``total_pages``; ``none``: every model in one answer;
    ``cursor-loop``: the first page, again and again, each saying more follows)."""
    answered = await _arrive(request, "catalog")
    if answered is not None:
        return answered
    sim = _sim(request)
    listing, paging, size = sim.listing, sim.config.catalog_paging, sim.config.catalog_page_size
    if request.query_params.get("include_schema", "").lower() not in ("true", "1"):
        listing = [{k: v for k, v in entry.items() if k != "input_schema"} for entry in listing]
    if paging == "none":
        return _answer(request, {"models": listing})
    if paging == "cursor-loop":
        return _answer(request, {"models": listing[:size], "has_more": True, "next_cursor": "again"})
    params = request.query_params
    try:
        page = int(params.get("page", "1")) if paging == "page" else 1
        start = int(params.get("cursor", "0")) if paging == "cursor" else (page - 1) * size
        if paging == "next-url":
            start = int(params.get("offset", "0"))
    except ValueError:
        return _refuse(request, 400, 400000, "a cursor, offset or page that is not a number")
    start = max(start, 0)
    end = start + size
    body: dict[str, Any] = {"models": listing[start:end]}
    more = end < len(listing)
    if paging == "cursor":
        body |= {"has_more": more, "next_cursor": str(end) if more else None}
    elif paging == "next-url":
        body["next"] = f"{_base(request)}/v1/models?include_schema=true&offset={end}" if more else None
    else:
        body |= {"page": page, "total_pages": max(1, -(-len(listing) // size))}
    return _answer(request, body)


async def download(request: Request) -> Response:
    """GET /files/{id}/{name}: an output file, as a CDN serves it (no token; byte ranges)."""
    found = await _job(request, "download", auth=False)
    if isinstance(found, Response):
        return found
    job = found[0]
    index = output_index(request.path_params["name"])
    if job.state != COMPLETED or index is None or index >= job.outputs:
        return _refuse(request, 404, 404001, "no such file")
    sim = _sim(request)
    if sim.lags("file-404-grace", job.request_id, job.finished_at, file=index):
        return error(404, 404001, "no such file", wire=sim.wire)
    content = expected_output_bytes(job.request_id, index, job.output_bytes, job.output_kind)
    total, status_code = len(content), 200
    headers = {"Accept-Ranges": "bytes"}
    wanted = _RANGE.match(request.headers.get("range", "").strip())
    if wanted:
        first, last = wanted.groups()
        start = int(first) if first else max(total - int(last or 0), 0)
        stop = min(int(last) + 1, total) if first and last else total
        if start >= total or stop <= start:
            return Response(status_code=416, headers={"Content-Range": f"bytes */{total}"})
        content, status_code = content[start:stop], 206
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{total}"
    if content and sim.strikes("truncate", "download"):
        sent = min(int(len(content) * sim.config.truncate_fraction), len(content) - 1)
        sim.served(sent)
        return TruncatedBody(content, sent, status_code, headers)
    sim.served(len(content))
    return Response(content, status_code, headers=headers, media_type=MEDIA_TYPES[job.output_kind])


async def sim_stats(request: Request) -> Response:
    """GET /_sim/stats: what happened so far."""
    return JSONResponse(_sim(request).stats())


async def sim_reset(request: Request) -> Response:
    """POST /_sim/reset: forget every job and zero the counters (the config stays)."""
    _sim(request).reset()
    return JSONResponse({"reset": True})


async def sim_config(request: Request) -> Response:
    """GET /_sim/config shows the config; POST applies a JSON object of changes to it."""
    sim = _sim(request)
    if request.method == "POST":
        try:
            changes = json.loads(await request.body() or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("expected a JSON object")
            sim.reconfigure(changes)
        except (ValueError, RunnerError) as exc:
            return error(400, 400000, str(exc))
    return JSONResponse(sim.config.as_json())


async def sim_request(request: Request) -> Response:
    """GET /_sim/requests/{id}: everything the simulator knows about one job: the input it was sent,
    when (``submitted_at``, ``finished_at``: the account clock's seconds) and its output URLs."""
    job, _ = _sim(request).lookup(request.path_params["request_id"])
    if job is None:
        return error(404, 404001, "unknown or expired request id")
    described = _sim(request).describe(job)
    described["output_urls"] = _output_urls(request, job) if job.state == COMPLETED else []
    return JSONResponse(described)


def _output_urls(request: Request, job: Job) -> list[str]:
    """The URLs of a completed job's outputs, as its result names them (from this request's base URL)."""
    files = f"{_base(request)}/files/{job.request_id}/"
    bare = _sim(request).config.bare_output_names
    return [files + output_name(i, job.output_kind, bare=bare) for i in range(job.outputs)]


async def _no_route(request: Request, exc: Exception) -> Response:
    status_code = getattr(exc, "status_code", 404)
    return error(
        status_code, status_code * 1000 + 1, f"no such endpoint: {request.method} {request.url.path}"
    )


def create_app(
    config: SimulatorConfig | None = None, *, clock: Clock = time.monotonic, catalog: Catalog | None = None
) -> Starlette:
    """The simulator as an ASGI app; ``app.state.sim`` is its :class:`.Simulation` (for tests).

    ``clock`` is a monotonic clock in seconds (a :class:`.ManualClock` makes tests exact); ``catalog``
    replaces the bundled models it accepts (default: the bundled catalog the runner validates with,
    never a user's synced one); what ``GET /v1/models`` lists is the newest saved catalog answer in
    ``schemas/catalog/source/`` and ``extra_models_path``'s entries.
    """
    routes = [
        Route("/v1/models", model_list, methods=["GET"]),
        Route("/v1/models/{model_id:path}", submit, methods=["POST"]),
        Route("/v1/models/{model_id:path}", price, methods=["GET"]),
        Route("/v1/requests/{request_id}/status", status, methods=["GET"]),
        Route("/v1/requests/{request_id}/result", result, methods=["GET"]),
        Route("/v1/requests/{request_id}/cancel", cancel, methods=["POST"]),
        Route("/files/{request_id}/{name}", download, methods=["GET"]),
        Route("/_sim/stats", sim_stats, methods=["GET"]),
        Route("/_sim/reset", sim_reset, methods=["POST"]),
        Route("/_sim/config", sim_config, methods=["GET", "POST"]),
        Route("/_sim/requests/{request_id}", sim_request, methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={404: _no_route, 405: _no_route})
    app.state.sim = Simulation(config or SimulatorConfig(), clock=clock, catalog=catalog)
    return app
