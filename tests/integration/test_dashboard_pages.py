"""Every dashboard page in a real browser (Debian's ``chromium`` via Playwright), on a store
written the way controllers write it, served by uvicorn in this process.

The store holds a campaign whose controller died (CONTROLLER LOST, a proposal awaiting
approval), a running campaign with four parameters, two objectives and a ``phase``
measurement (parallel coordinates, a Pareto front and a phase map: four chart cards) whose
lead instrument hangs, and a campaign with no data yet. The tests assert on element geometry
of the drawn charts (axis titles inside the plot, the colour bar clear of the last axis,
charts inside their cards, cards not overlapping, instrument names not cut), one legend
colour per status across reloads, "no data yet" for empty charts, the controller-lost state
and controls that follow the state, the approval queue end to end, and save a screenshot of
every page under ``$SDLAB_SCREENSHOTS`` (or the test's temporary directory).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from controller.api.app import create_app
from controller.api.settings import ApiSettings
from controller.api.users import add_user
from controller.store import (
    add_decision,
    add_event,
    add_experiment,
    add_measurements,
    add_step,
    create_campaign,
    finish_command,
    set_campaign_status,
    set_experiment_status,
    set_step_status,
    transaction,
    upsert_instrument,
)
from controller.store.lease import LeaseHolder, acquire_lease
from models.campaign import CampaignSpec
from models.records import Decision, Measurement, Proposal
from models.status import CampaignStatus, ExperimentStatus, InstrumentState, StepStatus
from models.tables import CommandRow, utcnow
from tests.controller.api_store import RecordingLauncher, approval_spec, populate

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = pytest.mark.slow

LONG = "furnace-north-bay-1"
"""An instrument name longer than the timeline's default margin."""


def _spec(name: str, params: int = 4) -> CampaignSpec:
    return CampaignSpec.model_validate(
        {
            "campaign": {"name": name, "seed": 2, "description": f"{name}: a test campaign"},
            "parameters": [
                {"type": "continuous", "name": f"temperature_{i}", "lower": 0.0, "upper": 1.0}
                for i in range(params)
            ],
            "objectives": [
                {"name": "yield_pct", "direction": "maximize"},
                {"name": "cost_eur", "direction": "minimize"},
            ],
            "workflow": [
                {"kind": "furnace", "action": "anneal"},
                {"kind": "xrd", "action": "scan"},
            ],
            "instruments": [
                {"name": LONG, "kind": "furnace", "address": "tcp://127.0.0.1:5801"},
                {"name": "xrd-1", "kind": "xrd", "address": "tcp://127.0.0.1:5802"},
            ],
            "planner": {"name": "random"},
            "budget": {"max_experiments": 40},
        }
    )


def _seed_mapping(factory: sessionmaker[Session]) -> int:
    """A RUNNING campaign (live lease) with 12 finished experiments, failed and running
    steps, and a furnace step that has run far past its usual time."""
    with transaction(factory) as s:
        c = create_campaign(s, _spec("mapping"), seed=2, max_experiments=40)
        set_campaign_status(s, c, CampaignStatus.RUNNING)
        me = LeaseHolder.this_process()
        acquire_lease(s, c.id, LeaseHolder(me.holder + "-pages", "lab-pc", 1), ttl_s=3600)
        d = add_decision(
            s,
            c.id,
            Decision(
                proposals=[Proposal({"x": 0})] * 13,
                planner="random",
                version="1",
                seed=2,
                n_train=0,
                seconds=0.01,
            ),
        )
        t0 = utcnow() - timedelta(minutes=30)
        for i in range(13):
            params = {f"temperature_{k}": ((i * (k + 3)) % 10) / 10 for k in range(4)}
            e = add_experiment(s, c.id, params, decision_id=d.id)
            set_experiment_status(s, e, ExperimentStatus.QUEUED)
            set_experiment_status(s, e, ExperimentStatus.RUNNING)
            start = t0 + timedelta(seconds=60 * i)
            hung = i == 12
            for index, (inst, action) in enumerate(((LONG, "anneal"), ("xrd-1", "scan"))):
                if hung and index == 1:
                    break
                st = add_step(
                    s,
                    e,
                    index=index,
                    kind="furnace" if index == 0 else "xrd",
                    action=action,
                    parameters={},
                    request_id=f"m{i}-{index}",
                )
                set_step_status(s, st, StepStatus.RUNNING, instrument=inst, started_at=start)
                if hung:
                    continue
                failed = i % 5 == 4 and index == 1
                set_step_status(
                    s,
                    st,
                    StepStatus.FAILED if failed else StepStatus.COMPLETED,
                    started_at=start + timedelta(seconds=20 * index),
                    finished_at=start + timedelta(seconds=20 * index + 15),
                    **({"error": "detector timeout"} if failed else {}),
                )
                if failed:
                    set_experiment_status(s, e, ExperimentStatus.FAILED, reason="xrd failed")
                elif index == 1:
                    add_measurements(
                        s,
                        st,
                        [
                            Measurement("yield_pct", 40 + 3 * i - 0.2 * i * i),
                            Measurement("cost_eur", 10 - 0.5 * i + (i % 3)),
                            Measurement("phase", array=[i % 3]),
                        ],
                    )
                    set_experiment_status(s, e, ExperimentStatus.COMPLETED)
        for name, state in ((LONG, InstrumentState.BUSY), ("xrd-1", InstrumentState.IDLE)):
            upsert_instrument(
                s,
                c.id,
                name,
                kind="furnace" if name == LONG else "xrd",
                address="tcp://127.0.0.1:5801",
                state=state,
                last_seen_at=utcnow(),
            )
        add_event(
            s, "alarm.instrument_quarantined", "xrd-1 quarantined after 3 faults", campaign_id=c.id
        )
        return c.id


@dataclass
class Lab:
    base: str
    factory: sessionmaker[Session]
    lost: int
    proposed: int
    mapping: int
    empty: int
    shots: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("pages")
    settings = ApiSettings(
        db_url=f"sqlite:///{tmp / 'dash.db'}", data_dir=tmp / "data", kdf_iterations=1000
    )
    app = create_app(settings, launcher=RecordingLauncher(settings))
    factory = app.state.factory
    with transaction(factory) as s:
        add_user(s, "ada", "admin", iterations=1000, password="ada-password")
    lost = populate(factory)  # RUNNING, no controller: CONTROLLER LOST
    mapping = _seed_mapping(factory)
    with transaction(factory) as s:
        empty = create_campaign(
            s, approval_spec("empty", objectives=1), seed=1, max_experiments=5
        ).id
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    end = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < end, "uvicorn did not start"
        time.sleep(0.05)
    shots = Path(os.environ.get("SDLAB_SCREENSHOTS") or tmp / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    try:
        yield Lab(
            f"http://127.0.0.1:{port}",
            factory,
            lost.campaign_id,
            lost.proposed,
            mapping,
            empty,
            shots,
        )
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        app.state.engine.dispose()


@pytest.fixture(scope="module")
def browser(lab: Lab) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run installs it)")
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(lab: Lab, browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.goto(f"{lab.base}/login")
    pg.fill("#name", "ada")
    pg.fill("#secret", "ada-password")
    pg.click("#login-submit")
    pg.wait_for_url(f"{lab.base}/")
    try:
        yield pg
    finally:
        ctx.close()


def _shot(lab: Lab, page: Any, name: str) -> None:
    page.screenshot(path=str(lab.shots / f"{name}.png"), full_page=True)


def _box(page: Any, selector: str) -> dict[str, float]:
    box = page.locator(selector).first.bounding_box()
    assert box is not None, f"{selector} is not drawn"
    return dict(box)


def _inside(inner: dict[str, float], outer: dict[str, float], slack: float = 1.0) -> bool:
    return (
        inner["x"] >= outer["x"] - slack
        and inner["y"] >= outer["y"] - slack
        and inner["x"] + inner["width"] <= outer["x"] + outer["width"] + slack
        and inner["y"] + inner["height"] <= outer["y"] + outer["height"] + slack
    )


def _overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return (
        a["x"] < b["x"] + b["width"] - 1
        and b["x"] < a["x"] + a["width"] - 1
        and a["y"] < b["y"] + b["height"] - 1
        and b["y"] < a["y"] + a["height"] - 1
    )


BOXES = """(sel) => [...document.querySelectorAll(sel)].map((e) => {
  const r = e.getBoundingClientRect();
  return {x: r.x, y: r.y, width: r.width, height: r.height, text: e.textContent};
})"""


def test_overview_puts_the_lost_controller_first_in_red(lab: Lab, page: Any) -> None:
    first = page.locator("#attention li").first
    assert first.get_attribute("data-what") == "controller_lost"
    badge = page.locator(f"#overview-campaigns tr[data-id='{lab.lost}'] .status")
    assert badge.inner_text() == "CONTROLLER LOST"
    assert badge.evaluate("(e) => getComputedStyle(e).backgroundColor") == "rgb(179, 45, 46)"
    running = page.locator(f"#overview-campaigns tr[data-id='{lab.mapping}'] td:nth-child(2)")
    assert running.inner_text() == "RUNNING"
    assert "UTC" in page.inner_text(f"#overview-campaigns tr[data-id='{lab.mapping}']")
    _shot(lab, page, "overview")


def _open_campaign(lab: Lab, page: Any, cid: int) -> None:
    page.goto(f"{lab.base}/campaigns/{cid}")
    page.wait_for_function("() => document.getElementById('campaign-status').innerText !== ''")
    page.wait_for_function(
        "() => document.querySelector('#chart-timeline .main-svg, #chart-timeline .empty')"
    )


def test_a_lost_campaign_reads_controller_lost_and_offers_only_what_applies(
    lab: Lab, page: Any
) -> None:
    _open_campaign(lab, page, lab.lost)
    page.wait_for_function(
        "() => document.getElementById('campaign-status').innerText === 'CONTROLLER LOST'"
    )
    status = page.locator("#campaign-status")
    assert status.evaluate("(e) => getComputedStyle(e).backgroundColor") == "rgb(179, 45, 46)"
    page.wait_for_function("() => !document.getElementById('btn-abort').hidden")
    assert page.locator("#btn-pause").is_hidden()
    assert page.locator("#btn-resume").is_hidden()
    assert page.locator("#instruments .status").first.inner_text() == "CONTROLLER LOST"
    page.wait_for_selector("#campaign-approvals tbody tr")  # why it awaits approval
    assert "random v1" in page.inner_text("#campaign-approvals")
    _shot(lab, page, "campaign-lost")

    _open_campaign(lab, page, lab.mapping)
    page.wait_for_function("() => !document.getElementById('btn-pause').hidden")
    assert page.locator("#btn-resume").is_hidden()
    assert page.locator("#btn-start").is_hidden()  # no Start on a running campaign
    assert page.locator("#btn-reset").is_hidden()


def test_charts_fit_their_cards_and_parallel_coordinates_are_readable(lab: Lab, page: Any) -> None:
    _open_campaign(lab, page, lab.mapping)
    for chart in ("chart-best", "chart-params", "chart-pareto", "chart-phase"):
        page.wait_for_selector(f"#{chart} .main-svg", timeout=30_000)
    # a third and fourth card appeared after the first two were drawn: every chart follows
    # its card's width, and no card covers another
    page.wait_for_function(
        """() => [...document.querySelectorAll('.grid > section:not([hidden])')].every((c) => {
            const svg = c.querySelector('.main-svg');
            return svg && svg.getBoundingClientRect().right <= c.getBoundingClientRect().right + 1;
        })""",
        timeout=15_000,
    )
    cards = page.evaluate(BOXES, ".grid > section:not([hidden])")
    assert len(cards) == 4
    for i, a in enumerate(cards):
        for b in cards[i + 1 :]:
            assert not _overlap(a, b), (a, b)
    for chart in ("chart-best", "chart-params", "chart-pareto", "chart-phase"):
        svg = _box(page, f"#{chart} .main-svg")
        section = _box(page, f"section:has(> #{chart})")
        assert _inside(svg, section), (chart, svg, section)

    plot = _box(page, "#chart-params .main-svg")
    titles = page.evaluate(BOXES, "#chart-params .xtick text")
    assert [t["text"] for t in titles] == [
        "temperature_0",
        "temperature_1",
        "temperature_2",
        "temperature_3",
        "yield_pct",
    ]
    for t in titles:
        assert t["width"] > 0, ("axis title hidden", t)
        assert _inside(t, plot), ("axis title outside the plot", t, plot)
    for i, a in enumerate(titles):
        for b in titles[i + 1 :]:
            assert not _overlap(a, b), ("axis titles overlap", a, b)
    colorbar = _box(page, "#chart-params .colorbar")
    axes = page.evaluate(BOXES, "#chart-params .shapelayer path")
    marks = page.evaluate(BOXES, "#chart-params .annotation")
    assert len(axes) == 5
    right = max(b["x"] + b["width"] for b in [*axes, *marks])
    assert right < colorbar["x"], ("the colour bar covers the last axis", right, colorbar)
    assert _inside(colorbar, plot)
    _shot(lab, page, "campaign-charts")


def _legend(page: Any) -> dict[str, str]:
    return dict(
        page.evaluate(
            """() => [...document.querySelectorAll('#chart-timeline .legend .traces')].map((t) =>
                [t.querySelector('.legendtext').textContent,
                 t.querySelector('.legendpoints path').style.fill])"""
        )
    )


def test_the_timeline_keeps_one_colour_per_status_and_its_labels_readable(
    lab: Lab, page: Any
) -> None:
    _open_campaign(lab, page, lab.mapping)
    page.wait_for_selector("#chart-timeline .legend .traces")
    colours = _legend(page)
    assert set(colours) == {"RUNNING", "COMPLETED", "FAILED"}
    declared = page.evaluate("() => sdlab.STATUS_COLOURS")

    def rgb(hex_colour: str) -> str:
        r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
        return f"rgb({r}, {g}, {b})"

    assert colours == {k: rgb(declared[k]) for k in colours}
    assert len(set(colours.values())) == 3
    svg = _box(page, "#chart-timeline .main-svg")
    names = page.evaluate(BOXES, "#chart-timeline .yaxislayer-above .ytick text")
    assert sorted(n["text"] for n in names) == sorted([LONG, "xrd-1"])
    for n in names:
        assert _inside(n, svg), ("instrument name cut", n, svg)
    ticks = page.evaluate(BOXES, "#chart-timeline .xaxislayer-above .xtick text")
    assert ticks
    for i, a in enumerate(ticks):
        for b in ticks[i + 1 :]:
            assert not _overlap(a, b), ("time labels overlap", a, b)
    assert page.locator("#chart-timeline .bartext").count() == 0  # no labels on the bars

    # a step finishes, so the statuses come in another order: the colours stay
    with transaction(lab.factory) as s:
        add_event(s, "note.test", "reload", campaign_id=lab.mapping)
    page.reload()
    page.wait_for_selector("#chart-timeline .legend .traces")
    assert _legend(page) == colours
    _shot(lab, page, "campaign-timeline")


def test_empty_charts_say_no_data_yet(lab: Lab, page: Any) -> None:
    _open_campaign(lab, page, lab.empty)
    for chart in ("chart-best", "chart-params", "chart-timeline"):
        page.wait_for_selector(f"#{chart} .empty")
        assert page.inner_text(f"#{chart}") == "no data yet"
        assert page.locator(f"#{chart} .main-svg").count() == 0
    _shot(lab, page, "campaign-empty")


def test_the_approval_queue_approves_across_campaigns_and_says_so_in_words(
    lab: Lab, page: Any
) -> None:
    page.goto(f"{lab.base}/approvals")
    row = page.locator(f"#approvals tr[data-id='{lab.proposed}']")
    assert "random v1" in row.inner_text()
    _shot(lab, page, "approvals")
    row.locator("input.pick").check()
    page.click("#btn-approve-selected")
    page.wait_for_function(
        "() => document.getElementById('feedback').innerText.startsWith('Sent approval of 1')"
    )
    with transaction(lab.factory) as s:
        cmd = s.scalars(select(CommandRow).where(CommandRow.command == "approve")).one()
        assert (cmd.campaign_id, cmd.actor) == (lab.lost, "user:ada")
        assert cmd.args == {"experiments": [lab.proposed]}
        finish_command(s, cmd, applied=True, result="1 approved")  # as a controller would
    page.wait_for_function(
        "() => document.getElementById('feedback').innerText.startsWith('Done: approval')",
        timeout=15_000,
    )
    assert "{" not in page.inner_text("#feedback")  # words, not JSON

    page.once("dialog", lambda d: d.accept())
    page.fill("#reject-reason", "too hot for the crucible")
    page.locator("#approvals input.pick").first.check()
    page.click("#btn-reject-selected")
    page.wait_for_function(
        "() => document.getElementById('feedback').innerText.startsWith('Sent rejection')"
    )
    with transaction(lab.factory) as s:
        cmd = s.scalars(select(CommandRow).where(CommandRow.command == "reject")).one()
        assert cmd.args["reason"] == "too hot for the crucible"


def test_every_other_page_renders_and_acts(lab: Lab, page: Any) -> None:
    page.goto(f"{lab.base}/instruments")
    overdue = page.locator(f"#instruments tr[data-name='{LONG}'] .status")
    assert overdue.inner_text().startswith("OVERDUE by")
    _shot(lab, page, "instruments")

    page.goto(f"{lab.base}/alarms")
    before = page.locator("#alarms tr.alarm-row").count()
    assert before >= 1
    alarm = page.locator("#alarms tr.alarm-row").first
    alarm.locator(".ack-note").fill("replaced the detector cable")
    alarm.locator(".btn-ack").click()
    page.wait_for_function(
        "() => document.getElementById('feedback').innerText.includes('acknowledged by ada')"
    )
    page.wait_for_function(
        f"() => document.querySelectorAll('#alarms tr.alarm-row').length === {before - 1}"
    )
    _shot(lab, page, "alarms")

    page.goto(f"{lab.base}/users")
    page.fill("#new-name", "grace")
    page.select_option("#new-role", "operator")
    page.click("#btn-create-user")
    page.wait_for_selector("#users tr[data-name='grace']")
    assert page.inner_text("#new-token").startswith("API token of grace")
    _shot(lab, page, "users")

    page.goto(f"{lab.base}/campaigns")
    page.wait_for_selector(f"#campaigns a[href='/campaigns/{lab.mapping}']")
    _shot(lab, page, "campaigns")
    page.goto(f"{lab.base}/tasks")
    _shot(lab, page, "tasks")
