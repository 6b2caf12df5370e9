"""The emergency stop's endpoints and dashboard button (controller/api/routes_estop.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from controller.store import transaction
from models.status import CampaignStatus
from models.tables import CampaignRow, CommandRow
from tests.controller.api_store import bearer
from tests.controller.conftest import Dashboard


def _post(dash: Dashboard, path: str, role: str) -> Any:
    return dash.client.post(path, headers=bearer(dash.tokens[role]))


def test_estop_and_reset_are_queued_for_operators_and_checked_against_the_status(
    dash: Dashboard,
) -> None:
    c = f"/api/campaigns/{dash.store.campaign_id}"
    assert _post(dash, f"{c}/estop", "viewer").status_code == 403
    assert _post(dash, f"{c}/reset", "operator").status_code == 409  # RUNNING, not ESTOPPED
    res = _post(dash, f"{c}/estop", "operator")
    assert res.status_code == 202, res.text
    with transaction(dash.factory) as s:
        row = s.get_one(CommandRow, res.json()["command_id"])
        assert (row.command, row.actor) == ("estop", "user:operator")
        s.execute(
            update(CampaignRow)
            .where(CampaignRow.id == dash.store.campaign_id)
            .values(status=CampaignStatus.ESTOPPED)
        )
    assert _post(dash, f"{c}/pause", "operator").status_code == 409
    res = _post(dash, f"{c}/reset", "operator")
    assert res.status_code == 202
    with transaction(dash.factory) as s:
        commands = s.scalars(select(CommandRow.command).order_by(CommandRow.id)).all()
        assert commands == ["estop", "reset"]
    assert _post(dash, "/api/campaigns/999/estop", "operator").status_code == 404


def test_the_campaign_page_has_the_estop_button_with_a_confirmation(dash: Dashboard) -> None:
    page = dash.client.get(
        f"/campaigns/{dash.store.campaign_id}", headers=bearer(dash.tokens["operator"])
    )
    assert page.status_code == 200
    assert 'id="btn-estop"' in page.text
    assert 'data-action="estop"' in page.text
    assert "data-confirm=" in page.text
    viewer = dash.client.get(
        f"/campaigns/{dash.store.campaign_id}", headers=bearer(dash.tokens["viewer"])
    )
    assert 'id="btn-estop"' not in viewer.text
