"""Emergency stop endpoints: ``POST /api/campaigns/{id}/estop`` and ``.../reset``.

Like the other controls they queue a command for the campaign's controller (202 with the
command's id; ``GET /api/commands/{id}`` tells what it did). The controller cancels every
action in flight, sends every instrument to its safe state and holds the campaign ESTOPPED
until an operator resets it (to PAUSED). See :mod:`controller.estop`.
"""

from __future__ import annotations

from fastapi import APIRouter

from controller.api.routes_campaigns import (
    CampaignId,
    CommandAccepted,
    DbSession,
    Operator,
    _expect,
    get_campaign_or_404,
    queue,
)
from models.status import CampaignStatus

router = APIRouter(prefix="/api", tags=["campaigns"])


@router.post("/campaigns/{campaign_id}/estop", status_code=202, summary="Emergency stop")
def estop(campaign_id: CampaignId, s: DbSession, who: Operator) -> CommandAccepted:
    """Cancel every action in flight at once, send every instrument to its safe state,
    start nothing until reset. (Abort, by contrast, lets running steps finish.)

    Accepted for a RUNNING or PAUSED campaign, and for an ESTOPPED one (the cancels and
    safe states are sent again).
    """
    c = get_campaign_or_404(s, campaign_id)
    live = {CampaignStatus.RUNNING, CampaignStatus.PAUSED, CampaignStatus.ESTOPPED}
    _expect(c, live, "emergency-stop")
    return queue(s, c, "estop", {}, who)


@router.post("/campaigns/{campaign_id}/reset", status_code=202, summary="Reset an emergency stop")
def reset(campaign_id: CampaignId, s: DbSession, who: Operator) -> CommandAccepted:
    """Release an emergency stop: the campaign becomes PAUSED; resume it to go on."""
    c = get_campaign_or_404(s, campaign_id)
    _expect(c, {CampaignStatus.ESTOPPED}, "reset")
    return queue(s, c, "reset", {}, who)
