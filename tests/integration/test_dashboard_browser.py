"""The dashboard in a real browser: headless Chromium (Debian's ``chromium``) via Playwright.

A real ``sdlab serve`` (uvicorn) and a simulated Branin campaign uploaded and started
through the API (so ``sdlab run`` runs as the server's child). The browser logs in through
the form, opens the campaign, sees experiments appear through the live stream without a
reload, presses Pause, and the charts are drawn as SVG by the plotly.js the app serves.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from sqlalchemy import select

from controller.api.users import add_user
from controller.store import make_engine, migrate, session_factory, transaction
from models.status import CampaignStatus
from models.tables import CampaignRow, CommandRow
from tests.integration.helpers import branin_campaign
from tests.integration.lab_harness import start_dashboard

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = pytest.mark.slow


def _wait(predicate: Any, timeout_s: float, what: str) -> Any:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _kill_tree(pid: int) -> None:
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    procs = [proc, *proc.children(recursive=True)]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGINT)

    def ended(p: psutil.Process) -> bool:
        # a run's process is sdlab serve's child, not ours: once it exits it stays a zombie
        # until serve reaps it, and psutil.wait_procs would wait for it to the timeout
        try:
            return p.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    end = time.monotonic() + 20
    while not all(ended(p) for p in procs) and time.monotonic() < end:
        time.sleep(0.1)
    alive = [p for p in procs if not ended(p)]
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=10)


@pytest.fixture
def server(tmp_path: Path, ray_address: str) -> Iterator[dict[str, Any]]:
    db = f"sqlite:///{tmp_path / 'dash.db'}"
    engine = make_engine(db)
    migrate(engine)
    with transaction(session_factory(engine)) as s:
        _, admin = add_user(s, "ada", "admin", iterations=1000)
        add_user(s, "otto", "operator", iterations=1000, password="otto-password")
    proc, base = start_dashboard(db, tmp_path, "--ray-address", ray_address)
    run_pid: list[int] = []
    try:
        yield {"base": base, "admin": admin, "engine": engine, "run_pid": run_pid}
    finally:
        for pid in run_pid:
            _kill_tree(pid)
        _kill_tree(proc.pid)
        engine.dispose()


def test_browser_login_live_experiments_pause_and_charts(
    server: dict[str, Any], tmp_path: Path
) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run installs it)")
    playwright_api = pytest.importorskip("playwright.sync_api")

    base = server["base"]
    auth = {"Authorization": f"Bearer {server['admin']}"}
    toml = branin_campaign(tmp_path / "branin.toml", name="live", budget=500, duration_s=0.4)
    # generous timeouts: validating an upload imports the planners, slow on a loaded machine
    api = httpx.Client(base_url=base, headers=auth, timeout=180)
    res = api.post("/api/campaigns", files={"file": ("branin.toml", toml.read_bytes())})
    assert res.status_code == 201, res.text
    cid = res.json()["id"]
    res = api.post(f"/api/campaigns/{cid}/start")
    api.close()
    assert res.status_code == 202, res.text
    server["run_pid"].append(res.json()["pid"])
    factory = session_factory(server["engine"])

    def status() -> CampaignStatus:
        with transaction(factory) as s:
            row = s.get(CampaignRow, cid)
            assert row is not None
            return row.status

    _wait(lambda: status() == CampaignStatus.RUNNING, 120, "the campaign to run")

    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            # the page's CSP forbids eval: waits are passed as functions, which it allows
            page = browser.new_page()
            page.goto(f"{base}/campaigns/{cid}")
            assert "/login" in page.url  # not logged in yet
            page.fill("#name", "otto")
            page.fill("#secret", "otto-password")
            page.click("#login-submit")
            page.wait_for_url(f"{base}/campaigns/{cid}")
            page.wait_for_function("() => document.body.dataset.live === 'yes'", timeout=30_000)
            page.evaluate("window.sameDocument = true")
            newest = (
                "Math.max(0, ...[...document.querySelectorAll('#experiments tr.experiment-row')]"
                ".map((r) => Number(r.dataset.id)))"
            )
            page.wait_for_function(f"() => {newest} > 0", timeout=60_000)
            before = page.evaluate(newest)
            page.wait_for_function(f"() => {newest} > {before}", timeout=60_000)
            assert page.evaluate("window.sameDocument === true")  # no reload happened
            page.wait_for_function(
                "() => document.querySelector('#experiments tbody')"
                ".innerText.includes('COMPLETED')",
                timeout=60_000,
            )

            page.click("#btn-pause")
            page.wait_for_function(
                "() => document.getElementById('control-result').innerText.includes('controller')",
                timeout=30_000,
            )
            with transaction(factory) as s:
                cmd = s.scalars(select(CommandRow).where(CommandRow.campaign_id == cid)).one()
                assert cmd.command == "pause"
                assert cmd.actor == "user:otto"
            # the running controller picks the command up and pauses; the page shows it live
            _wait(lambda: status() == CampaignStatus.PAUSED, 60, "the campaign to pause")
            page.wait_for_function(
                "() => document.getElementById('campaign-status').innerText === 'PAUSED'",
                timeout=30_000,
            )

            for chart in ("chart-best", "chart-params", "chart-timeline"):
                page.wait_for_selector(f"#{chart} svg.main-svg", timeout=30_000)
            assert page.locator("#chart-best .scatterlayer .trace").count() >= 2
            assert page.locator("#chart-params .scatterlayer .point").count() >= 1
            assert page.locator("#chart-timeline .barlayer .point").count() >= 1
            assert "planner" in page.inner_text("#decision")

            page.goto(f"{base}/campaigns")
            page.wait_for_selector(f"#campaigns a[href='/campaigns/{cid}']", timeout=30_000)
            assert page.locator("#upload-form").count() == 0  # operators do not create
        finally:
            browser.close()
