"""A stateful simulator of RunComfy's Model API, for tests, benchmarks and the demo.

It speaks the protocol of ``shared/runcomfy-api.md`` (submit, status, result, cancel, price, the model
catalog in pages, output files of each model's kind), runs one account's queue exactly on an
injectable clock, validates and prices inputs with the runner's own bundled catalog and price table,
injects faults on demand, and writes its answers in any of the shapes of :data:`SHAPES` (the other
ways a real API may write them). ``GET /_sim/stats`` counts what happened. Use it in-process::

    app = create_app(SimulatorConfig(concurrency=2), clock=ManualClock())
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim")

or on loopback: ``with running_server(config) as base_url: ...``, ``serve(config, port=8790)``, or
``python -m runner.simulator --port 0 --ready-file F``.
"""

from importlib import import_module
from typing import Any

from .config import (
    DEFAULT_FAULT_ENDPOINTS,
    ENDPOINTS,
    FAULTS,
    SimulatorConfig,
    add_simulator_arguments,
    config_from_args,
)
from .shapes import GRACE_SHAPES, SHAPES, Shape

# The app and the server load starlette and uvicorn: only when asked for, so that the CLI (which lists
# `simulate`'s options for every command) starts without them.
_LAZY = {
    "Job": ".account",
    "create_app": ".app",
    "DEFAULT_OUTPUT_BYTES": ".outputs",
    "expected_output_bytes": ".outputs",
    "output_name": ".outputs",
    "running_server": ".server",
    "serve": ".server",
    "ManualClock": ".simulation",
    "Simulation": ".simulation",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_FAULT_ENDPOINTS",
    "DEFAULT_OUTPUT_BYTES",
    "ENDPOINTS",
    "FAULTS",
    "GRACE_SHAPES",
    "Job",
    "ManualClock",
    "SHAPES",
    "Shape",
    "Simulation",
    "SimulatorConfig",
    "add_simulator_arguments",
    "config_from_args",
    "create_app",
    "expected_output_bytes",
    "output_name",
    "running_server",
    "serve",
]
