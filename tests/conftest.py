"""Shared fixtures: manifests written to real files, and the simulator reached over real HTTP."""

from __future__ import annotations

import os
import shutil
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import stop_leftovers

from runner.api.retry import RetryPolicy
from runner.batch import BatchOptions, BatchResult, run_batch
from runner.simulator import SimulatorConfig, create_app

REPO = Path(__file__).resolve().parent.parent
I2V = "kling/kling-video-o3/pro/image-to-video"
R2V = "kling/kling-video-o3/standard/reference-to-video"

# Retries that do not sleep: failure paths run at full speed, with the same decisions.
FAST_RETRY: dict[str, Any] = {"retries": 8, "retry_max_time": 60.0, "retry_sleep_scale": 0.0}
# The same as a policy, for tests that build an ApiConfig or a DownloadConfig themselves.
FAST_POLICY = RetryPolicy(attempts=8, max_seconds=60.0, sleep_scale=0.0)


# Every test, and every process a test starts, sees a cache folder of the session's own: a catalog the
# developer synced for real (`runcomfy-batch models sync`) must not change what the tests see, and a
# test's sync must not reach the developer's cache. Set on import, before a test module loads a catalog.
_CACHE = tempfile.mkdtemp(prefix="runcomfy-batch-test-cache-")
os.environ["XDG_CACHE_HOME"] = _CACHE


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture
def no_runner_outlives_its_test() -> Iterator[None]:
    """Runners a test started in the background (``helpers.start_cli``) are stopped when it ends
    (``pytestmark = pytest.mark.usefixtures("no_runner_outlives_its_test")``)."""
    yield
    stop_leftovers()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def write_manifest(tmp_path: Path) -> Callable[..., Path]:
    """Write a manifest (YAML text, dedented) into tmp_path and return its path."""

    def write(text: str, name: str = "m.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
        return path

    return write


def simple_manifest(n: int, *, name: str = "batch", model: str = R2V, extra: str = "") -> str:
    """A manifest of ``n`` distinct reference-to-video jobs."""
    jobs = "\n".join(f'  - id: shot-{i}\n    input: {{prompt: "shot number {i}"}}' for i in range(n))
    return (
        f"version: 1\nname: {name}\noutput_dir: ./out\n{extra}"
        f"defaults:\n  model: {model}\n  input: {{duration: 5}}\njobs:\n{jobs}\n"
    )


class InProcess:
    """The simulator app and a way to run manifests against it in-process (ASGI transport)."""

    def __init__(self, config: SimulatorConfig, tmp_path: Path) -> None:
        self.app = create_app(config)
        self.config = config
        self.tmp_path = tmp_path

    def transport(self) -> httpx.ASGITransport:
        return httpx.ASGITransport(app=self.app)

    def options(self, **fields: Any) -> BatchOptions:
        """Options for a run against this simulator; ``fields`` are ``BatchOptions``'s."""
        return BatchOptions(
            token=self.config.token,
            base_url="http://sim.local",
            transport=self.transport(),
            state_path=self.tmp_path / "state.sqlite",
            **{"flush_interval": 0.01, **FAST_RETRY, **fields},
        )

    async def run(
        self,
        manifest: Path,
        events: list[dict[str, Any]] | None = None,
        options: BatchOptions | None = None,
        **fields: Any,
    ) -> BatchResult:
        sink = events.append if events is not None else None
        return await run_batch(manifest, options or self.options(**fields), on_event=sink)

    async def stats(self) -> dict[str, Any]:
        async with httpx.AsyncClient(transport=self.transport(), base_url="http://sim.local") as client:
            return (await client.get("/_sim/stats")).json()

    async def configure(self, **changes: Any) -> None:
        async with httpx.AsyncClient(transport=self.transport(), base_url="http://sim.local") as client:
            answer = await client.post("/_sim/config", json=changes)
            assert answer.status_code == 200, answer.text


@pytest.fixture
def sim(tmp_path: Path) -> Callable[..., InProcess]:
    """Make an in-process simulator: ``sim(concurrency=4, job_seconds=0.05, ...)``."""

    def make(**config: Any) -> InProcess:
        defaults: dict[str, Any] = {
            "concurrency": 4,
            "job_seconds": 0.05,
            "job_spread": 0.2,
            "output_bytes": 4096,
        }
        return InProcess(SimulatorConfig(**{**defaults, **config}), tmp_path)

    return make
