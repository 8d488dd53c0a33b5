"""Money: estimates against hand-computed figures, a budget that holds under concurrency, plan on a
half-finished state file, and identical jobs paid once."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys

import pytest
from conftest import I2V, R2V, simple_manifest

from runner.catalog.models import Catalog
from runner.catalog.pricing import PriceTable
from runner.errors import BudgetExceeded
from runner.reports.plan import make_plan

pytestmark = pytest.mark.anyio

CATALOG = Catalog.load()
PRICES = PriceTable.load(CATALOG)


def quote(model: str, **input: object) -> float | None:
    spec = CATALOG.get(model)
    return PRICES.quote(model, input, spec.defaults if spec else {}).usd


@pytest.mark.parametrize(
    ("model", "input", "usd"),
    [
        (R2V, {"prompt": "p"}, 5 * 0.084),  # default duration 5, no sound
        (R2V, {"prompt": "p", "duration": 10}, 10 * 0.084),
        (R2V, {"prompt": "p", "duration": 10, "sound": True}, 10 * 0.112),
        (R2V, {"prompt": "p", "duration": 8, "video": "https://x/v.mp4"}, 8 * 0.126),
        (
            R2V,
            {"prompt": "p", "duration": 8, "video": "https://x/v.mp4", "sound": True},
            8 * 0.126,
        ),  # sound: no effect
        (I2V, {"prompt": "p", "image": "https://x/a.png"}, 5 * 0.112),
        (I2V, {"prompt": "p", "image": "https://x/a.png", "duration": 15, "sound": True}, 15 * 0.14),
        (I2V, {"prompt": "p", "image": "https://x/a.png", "duration": 3, "sound": False}, 3 * 0.112),
    ],
)
def test_estimates_match_hand_computed_prices(model, input, usd):
    assert quote(model, **input) == pytest.approx(usd)


def test_an_unknown_models_price_is_unknown_not_guessed():
    assert PRICES.quote("kling/kling-video-o3/4K/text-to-video", {"duration": 5}).usd is None


def test_a_user_price_file_overrides_the_bundled_one(tmp_path):
    override = tmp_path / "prices.json"
    override.write_text(
        json.dumps({"read_on": "2026-12-01", "models": {R2V: {"unit": "second", "usd": 0.1}}})
    )
    table = PriceTable.load(CATALOG, override)
    assert table.quote(R2V, {"duration": 10}).usd == pytest.approx(1.0)
    assert table.read_on == "2026-12-01"
    assert table.quote(I2V, {"duration": 10}).usd == pytest.approx(1.12)  # untouched models keep theirs


async def test_the_budget_cap_holds_exactly_under_concurrency(sim, write_manifest):
    """$2.00 buys four $0.42 jobs (1.68), not five (2.10): the simulator never charges more than the cap,
    and the rest are held, with partial mode on."""
    account = sim(concurrency=8)
    manifest = write_manifest(simple_manifest(10, extra="budget_usd: 2.0\n"))
    with pytest.raises(BudgetExceeded, match=r"estimate for this run is \$4\.20"):
        await account.run(manifest)
    assert (await account.stats())["requests_total"] == 0

    result = await account.run(manifest, budget_partial=True)
    stats = await account.stats()
    assert stats["cost_charged_usd"] <= 2.0
    assert stats["cost_charged_usd"] == pytest.approx(4 * 0.42)
    assert result.counts == {"succeeded": 4, "held": 6}
    assert result.exit_code == 1


async def test_plan_on_a_half_finished_state_file(sim, write_manifest, tmp_path):
    """After half the jobs ran, plan says what is done and what a run would still spend."""
    account = sim()
    manifest_path = write_manifest(simple_manifest(4))
    await account.run(manifest_path)
    more = write_manifest(simple_manifest(8))  # four more jobs appended to the same manifest
    from runner.engine.store import Store
    from runner.manifest.loader import load_manifest

    manifest = load_manifest(more, CATALOG)
    with Store.open(tmp_path / "state.sqlite", create=False) as store:
        plan = make_plan(manifest, PRICES, lambda m: CATALOG.get(m).defaults, store, budget_usd=3.0)
    [model] = plan.models
    assert (model.jobs, model.done, model.remaining) == (8, 4, 4)
    assert plan.estimate_usd == pytest.approx(8 * 0.42)
    assert plan.remaining_usd == pytest.approx(4 * 0.42)
    assert plan.spent_usd == pytest.approx(4 * 0.42)
    assert plan.over_budget  # 1.68 committed + 1.68 to go > 3.00


def test_plan_says_identical_jobs_are_paid_once(write_manifest, tmp_path):
    write_manifest(f"""
        version: 1
        name: twins
        jobs:
          - {{id: a, model: {I2V}, input: {{prompt: same, image: "https://x/a.png"}}}}
          - {{id: b, model: {I2V}, input: {{prompt: same, image: "https://x/a.png"}}}}
          - {{id: c, model: {I2V}, input: {{prompt: other, image: "https://x/a.png", duration: 10}}}}
        """)
    done = subprocess.run(
        [sys.executable, "-m", "runner", "plan", "m.yaml", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    data = json.loads(done.stdout)
    assert data["twins"] == {"b": "a"}
    assert data["estimate_usd"] == pytest.approx(5 * 0.112 + 10 * 0.112)
    assert data["models"][0]["paid_requests"] == 2
    text = subprocess.run(
        [sys.executable, "-m", "runner", "plan", "m.yaml"], cwd=tmp_path, capture_output=True, text=True
    ).stdout
    assert "b = a" in text


async def test_actual_cost_is_recorded_beside_the_estimate(sim, write_manifest, tmp_path):
    account = sim()
    await account.run(write_manifest(simple_manifest(2)))
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    for job in report["jobs"]:
        assert job["cost_usd"] == pytest.approx(job["estimate_usd"]) == pytest.approx(0.42)
    assert report["summary"]["cost_usd"] == pytest.approx(0.84)


def test_the_apis_price_call_refreshes_a_model_and_keeps_tier_ratios():
    fresh = PRICES.refreshed(R2V, {"model_id": R2V, "base_price_usd": 0.1, "price_unit": "second"})
    assert fresh.quote(R2V, {"duration": 10}).usd == pytest.approx(1.0)
    assert fresh.quote(R2V, {"duration": 10, "sound": True}).usd == pytest.approx(
        1.0 * 0.112 / 0.084 * 1.0, rel=1e-3
    )
    unknown = PRICES.refreshed("vendor/new-model", {"base_price_usd": 0.5, "price_unit": "output"})
    assert unknown.quote("vendor/new-model", {}).usd == pytest.approx(0.5)
    assert PRICES.refreshed(R2V, {"error_code": 404001}) is PRICES


async def test_a_run_asks_the_api_for_prices_once_per_model_it_submits(sim, write_manifest):
    account = sim()
    events: list[dict] = []
    await account.run(write_manifest(simple_manifest(3)), events)
    assert (await account.stats())["requests"]["price"] == 1
    assert [e["model"] for e in events if e["event"] == "price"] == [R2V]


SEEDREAM = "bytedance/seedream-5.0-pro/text-to-image"  # $0.08 per image, $0.04 at 1K, as the catalog says
WAN_STILLS = "wan-ai/wan-2.7/text-to-image"  # priced nowhere; up to 5 images per request (max_images)
O3_T2V = "kling/kling-video-o3/standard/text-to-video"  # the catalog: per second, sound ×1.33, no base
O3_PRO_R2V = "kling/kling-video-o3/pro/reference-to-video"  # the catalog: a reference video changes it by ?


def test_a_price_per_output_counts_the_files_an_input_asks_for(tmp_path):
    assert quote(SEEDREAM, prompt="p") == pytest.approx(0.08)  # resolution defaults to 2K
    assert quote(SEEDREAM, prompt="p", resolution="1K") == pytest.approx(0.04)
    given = PRICES.quote(SEEDREAM, {"prompt": "p"}, CATALOG.get(SEEDREAM).defaults)
    assert (given.unit, given.source, given.read_on, given.units) == ("output", "catalog", "2026-09-23", 1.0)
    assert quote(WAN_STILLS, prompt="p", max_images=3) is None  # never guessed
    override = tmp_path / "prices.json"
    override.write_text(json.dumps({"read_on": "2026-12-02", "models": {WAN_STILLS: {"usd": 0.03}}}))
    table = PriceTable.load(CATALOG, override)
    stills = table.quote(WAN_STILLS, {"prompt": "p", "max_images": 3}, CATALOG.get(WAN_STILLS).defaults)
    assert (stills.usd, stills.unit, stills.units, stills.source) == (
        pytest.approx(0.09),
        "output",
        3.0,
        "--prices prices.json",
    )
    assert table.quote(WAN_STILLS, {"prompt": "p"}, CATALOG.get(WAN_STILLS).defaults).usd == pytest.approx(
        0.03
    )


def test_a_catalog_tier_is_a_factor_of_the_base_and_an_unpublished_one_is_unknown():
    assert quote(O3_T2V, prompt="p", duration=10) is None  # the catalog states no base price
    fresh = PRICES.refreshed(O3_T2V, {"base_price_usd": 0.1, "price_unit": "second"})
    assert fresh.quote(O3_T2V, {"duration": 10}).usd == pytest.approx(1.0)
    assert fresh.quote(O3_T2V, {"duration": 10, "sound": True}).usd == pytest.approx(1.33)
    refreshed = fresh.quote(O3_T2V, {"duration": 10})
    assert refreshed.source == "price call" and refreshed.read_on == datetime.date.today().isoformat()
    pro = PRICES.refreshed(O3_PRO_R2V, {"base_price_usd": 0.2, "price_unit": "second"})
    assert pro.quote(O3_PRO_R2V, {"duration": 5}).usd == pytest.approx(1.0)
    assert pro.quote(O3_PRO_R2V, {"duration": 5, "video": "https://x/v.mp4"}).usd is None


def test_plan_says_unknown_price_and_where_each_known_one_was_read(write_manifest, tmp_path):
    write_manifest(f"""
        version: 1
        name: mixed
        jobs:
          - {{id: poster, model: {SEEDREAM}, input: {{prompt: p, resolution: 1K}}}}
          - {{id: stills, model: {WAN_STILLS}, input: {{prompt: p, max_images: 2}}}}
        """)
    done = subprocess.run(
        [sys.executable, "-m", "runner", "plan", "m.yaml"], cwd=tmp_path, capture_output=True, text=True
    )
    lines = {line.split()[0]: line for line in done.stdout.splitlines()[2:4]}
    assert lines[SEEDREAM].endswith("0.04  $0.08/output (catalog, 2026-09-23)")
    assert lines[WAN_STILLS].endswith("?  unknown price")
    assert "some models have no known price" in done.stdout


async def test_a_run_under_a_budget_never_submits_a_job_whose_price_is_unknown(sim, write_manifest, tmp_path):
    """Refused before anything is paid; with --prices it runs; so it does when the API's price call
    knows the price, and then nothing else needs to."""
    manifest = write_manifest(f"""
        version: 1
        name: capped
        output_dir: ./out
        budget_usd: 1.0
        jobs:
          - {{id: stills, model: {WAN_STILLS}, input: {{prompt: p, max_images: 2}}}}
        """)
    account = sim()
    with pytest.raises(BudgetExceeded, match=f"no known price: {WAN_STILLS}"):
        await account.run(manifest)
    assert (await account.stats())["submits_accepted"] == 0
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"models": {WAN_STILLS: {"unit": "output", "usd": 0.05}}}))
    result = await account.run(manifest, prices_path=prices)
    assert result.counts == {"succeeded": 1}
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["jobs"][0]["estimate_usd"] == pytest.approx(0.1)

    told = sim(prices_path=str(prices))  # an API whose price call knows the model
    (tmp_path / "state.sqlite").unlink()
    result = await told.run(manifest)
    assert result.counts == {"succeeded": 1}
    assert (await told.stats())["cost_charged_usd"] == pytest.approx(0.1)
