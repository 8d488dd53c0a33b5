"""A stateful simulator of RunComfy's Model API, for tests, benchmarks and the demo.

It speaks the protocol of ``shared/runcomfy-api.md`` (submit, status, result, cancel, price, output
files), runs one account's queue exactly on an injectable clock, validates and prices inputs with the
runner's own bundled schemas and price table, and injects faults on demand. ``GET /_sim/stats`` counts
what happened. Use it in-process::

    app = create_app(SimulatorConfig(concurrency=2), clock=ManualClock())
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim")

or on loopback: ``with running_server(config) as base_url: ...``, ``serve(config, port=8790)``, or
``python -m runner.simulator --port 0 --ready-file F``.
"""

from .account import Job
from .app import create_app
from .config import (
    DEFAULT_FAULT_ENDPOINTS,
    ENDPOINTS,
    FAULTS,
    SimulatorConfig,
    add_simulator_arguments,
    config_from_args,
)
from .outputs import DEFAULT_OUTPUT_BYTES, expected_output_bytes, output_name
from .server import running_server, serve
from .simulation import ManualClock, Simulation

__all__ = [
    "DEFAULT_FAULT_ENDPOINTS",
    "DEFAULT_OUTPUT_BYTES",
    "ENDPOINTS",
    "FAULTS",
    "Job",
    "ManualClock",
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
