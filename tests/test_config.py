"""From the command line to the configs a run uses: every default written once, every flag reaching the
part it sets, and the precedence flag, environment, manifest, default."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import anyio
import httpx
import pytest
from conftest import simple_manifest

from runner import defaults
from runner.api.client import ApiConfig
from runner.api.download import DownloadConfig, download
from runner.api.http import AiohttpSession, HttpSession, HttpxSession
from runner.api.retry import RetryPolicy
from runner.batch import BatchOptions, configure
from runner.cli.main import build_parser, duration_text, parse_duration, run_options
from runner.engine.settings import RunSettings
from runner.errors import TransportError, UsageError
from runner.manifest.loader import load_manifest


def cli_options(*flags: str) -> BatchOptions:
    """The options ``runcomfy-batch run m.yaml FLAGS`` runs with (the token as from the environment)."""
    return replace(run_options(build_parser().parse_args(["run", "m.yaml", *flags])), token="a-token")


def test_the_configs_built_from_default_options_are_each_class_s_own_defaults():
    """Nothing is defaulted twice: what ``configure`` builds from untouched options is what each config
    class holds by default, the submit retry policy included (it was 300 s as the run built it and
    120 s as the client defaulted it)."""
    config = configure(BatchOptions(token="a-token"))
    assert config.api == ApiConfig(token="a-token")
    api_host = httpx.URL(defaults.BASE_URL).host
    assert config.settings == RunSettings(download=DownloadConfig(allowed_hosts=(api_host,)))
    assert configure(cli_options()) == replace(
        config, settings=replace(config.settings, handle_signals=True)
    )  # the command line's defaults are the library's


def test_a_submit_retries_less_than_a_read_and_the_flags_only_lower_it():
    """A submit answered 429 (surely not taken) is retried with the reads' backoff, at most 6 times within
    120 s; --retries and --retry-max-time lower both policies and never raise a submit's."""
    api = configure(cli_options()).api
    assert (api.retry.attempts, api.retry.max_seconds) == (8, 300.0)
    assert (api.submit_retry.attempts, api.submit_retry.max_seconds) == (6, 120.0)
    assert api.submit_retry == replace(api.retry, attempts=6, max_seconds=120.0)

    patient = configure(cli_options("--retries", "20", "--retry-max-time", "1h")).api
    assert (patient.retry.attempts, patient.retry.max_seconds) == (20, 3600.0)
    assert (patient.submit_retry.attempts, patient.submit_retry.max_seconds) == (6, 120.0)

    hasty = configure(cli_options("--retries", "3", "--retry-max-time", "30s")).api
    assert (hasty.submit_retry.attempts, hasty.submit_retry.max_seconds) == (3, 30.0)
    assert hasty.retry == hasty.submit_retry  # then the same policy for both


def test_every_flag_reaches_the_config_it_sets():
    """Each run flag lands in the config of the part that uses it; the timeouts in both the API client
    and the downloads."""
    config = configure(
        cli_options(
            "--connect-timeout", "3s", "--read-timeout", "20s", "--stall-timeout", "45s",
            "--retries", "5", "--retry-max-time", "90s", "--job-timeout", "30m", "--queue-timeout", "10m",
            "--concurrency", "7", "--budget", "12.5", "--budget-partial", "--resubmit-unknown",
            "--retry-failed", "--auto-resubmit-failed", "2", "--verify-hashes",
            "--allow-output-host", "cdn.example", "--base-url", "http://127.0.0.1:9",
        )
    )  # fmt: skip
    api, settings, fetch = config.api, config.settings, config.settings.download
    assert (api.base_url, api.connect_timeout, api.read_timeout) == ("http://127.0.0.1:9", 3.0, 20.0)
    assert (fetch.connect_timeout, fetch.stall_seconds) == (3.0, 45.0)
    assert fetch.allowed_hosts == ("cdn.example", "127.0.0.1")
    assert api.retry == fetch.retry == RetryPolicy(attempts=5, max_seconds=90.0)
    assert settings == RunSettings(
        max_in_flight=7,
        resubmit_unknown=True,
        retry_failed=True,
        auto_resubmit_failed=2,
        budget_usd=12.5,
        budget_partial=True,
        job_timeout=1800.0,
        queue_timeout=600.0,
        outage_max_time=90.0,  # as long as --retry-max-time, unless given
        verify_hashes=True,
        handle_signals=True,
        download=fetch,
    )


def test_a_flag_wins_over_the_environment_which_wins_over_the_manifest_and_the_default(
    write_manifest, monkeypatch
):
    """Precedence: a flag (a field set in BatchOptions), then the environment variable, then the
    manifest, then the default."""
    manifest = load_manifest(write_manifest(simple_manifest(1, extra="budget_usd: 40\nconcurrency: 3\n")))
    monkeypatch.delenv(defaults.BASE_URL_ENV, raising=False)
    monkeypatch.delenv(defaults.TOKEN_ENV, raising=False)
    with pytest.raises(UsageError, match=defaults.TOKEN_ENV):
        configure(BatchOptions())

    monkeypatch.setenv(defaults.TOKEN_ENV, "from-env")
    plain = configure(BatchOptions(), manifest)
    assert (plain.api.token, plain.api.base_url) == ("from-env", defaults.BASE_URL)
    assert (plain.settings.budget_usd, plain.settings.max_in_flight) == (40, 3)  # the manifest's
    assert configure(BatchOptions()).settings.budget_usd is None  # no manifest, no budget

    monkeypatch.setenv(defaults.BASE_URL_ENV, "http://127.0.0.1:7")
    flagged = configure(BatchOptions(token="flag", budget_usd=0, max_in_flight=1), manifest)
    assert (flagged.api.token, flagged.api.base_url) == ("flag", "http://127.0.0.1:7")
    assert (flagged.settings.budget_usd, flagged.settings.max_in_flight) == (0, 1)  # 0 is a budget
    assert configure(BatchOptions(base_url="http://127.0.0.1:8")).api.base_url == "http://127.0.0.1:8"


def test_the_help_shows_the_defaults_the_run_uses(capsys):
    """`run --help` prints each default from the one place it is written, in a form the flag reads
    back."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split("options:", 1)[1].split())
    for flag, value in [
        ("--connect-timeout", "10s"),
        ("--read-timeout", "60s"),
        ("--stall-timeout", "60s"),
        ("--retries", "8"),
        ("--retry-max-time", "5m"),
        ("--job-timeout", "2h"),
        ("--auto-resubmit-failed", "0"),
    ]:
        # The flag's own line: its help up to the next flag, then "default VALUE" in its parentheses.
        assert re.search(
            re.escape(flag) + r" [A-Z_]+ (?:(?!--)[^(])*\([^)]*\bdefault " + value + r"\b", text
        ), flag
    for seconds in (defaults.CONNECT_TIMEOUT, defaults.RETRY_MAX_SECONDS, defaults.JOB_TIMEOUT, 90.0, 0.5):
        assert parse_duration(duration_text(seconds)) == seconds


# -- the connect timeout a download really uses ----------------------------------------------------
@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port whose kernel completes every TCP handshake and then nothing more is said: an
    HTTPS client waits there for the server's TLS hello, which is still connecting."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)  # never accepted: the handshakes complete in the backlog
        yield server.getsockname()[1]


@pytest.mark.parametrize("kind", ["aiohttp", "httpx"])
@pytest.mark.anyio
async def test_downloads_give_up_connecting_after_the_connect_timeout(kind, silent_port, tmp_path: Path):
    """--connect-timeout reaches downloads: an output host that never finishes connecting is given up
    on after it (0.3 s here), not after the 10 s default."""
    options = cli_options("--connect-timeout", "0.3s", "--retries", "1", "--allow-output-host", "127.0.0.1")
    fetch = configure(options).settings.download
    http: HttpSession = AiohttpSession() if kind == "aiohttp" else HttpxSession(httpx.AsyncClient())
    started = time.monotonic()
    try:
        with anyio.fail_after(5), pytest.raises(TransportError, match="ConnectTimeout"):
            await download(http, f"https://127.0.0.1:{silent_port}/out.mp4", tmp_path / "out.mp4", fetch)
    finally:
        await http.aclose()
    assert time.monotonic() - started < 3
    assert list(tmp_path.iterdir()) == []
