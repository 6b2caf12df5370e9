"""The running controller's side of its campaign lease: take it, keep it, notice losing it.

:mod:`controller.store.lease` holds the rules; this module renews the lease in the
background while the campaign runs. The controller asks :attr:`CampaignLease.valid` before
it sends a step: ``False`` once another controller has taken the campaign over (the lease
was found held by someone else), or once the last successful renewal is older than the
lease itself (the store could not be reached, so another controller may already have taken
over). Either way the controller stops sending, and the operator is told through an alarm.

The controller's grants of lab units (:mod:`controller.store.lab`) share the lease's
lifetime: each renewal extends them in the same transaction, and giving the lease back
gives them back, so a controller that stops renewing (killed, hung) loses both together.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from sqlalchemy.orm import Session, sessionmaker

from controller.store import transaction
from controller.store.lab import release_holder, renew_holder
from controller.store.lease import LeaseHolder, acquire_lease, release_lease, renew_lease

logger = logging.getLogger(__name__)

__all__ = ["CampaignLease"]


class CampaignLease:
    """One controller's lease on one campaign.

    Args:
        sessions: Session factory of the store.
        campaign_id: The campaign.
        ttl_s: Lease lifetime in seconds; renewed every ``ttl_s / 6``.
        on_lost: Awaited once when the lease is lost, with the reason.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        campaign_id: int,
        ttl_s: float,
        on_lost: Callable[[str], Awaitable[None]],
    ) -> None:
        self._sessions = sessions
        self.campaign_id = campaign_id
        self.ttl_s = ttl_s
        self.me = LeaseHolder.this_process()
        self._on_lost = on_lost
        self._renewed = 0.0  # time.monotonic() of the last successful take or renewal
        self.lost: str | None = None
        """Why the lease was lost, or ``None`` while it is held."""

    def acquire(self) -> None:
        """Take the lease.

        Raises:
            LeaseHeldError: If another live controller holds it.
        """
        t = time.monotonic()
        with transaction(self._sessions) as s:
            acquire_lease(s, self.campaign_id, self.me, self.ttl_s)
        self._renewed = t
        logger.info("campaign %d: lease taken by %s", self.campaign_id, self.me.holder)

    @property
    def valid(self) -> bool:
        """Whether this controller may still send: held, and renewed within its lifetime."""
        if self.lost is None and time.monotonic() - self._renewed >= self.ttl_s:
            self.lost = f"lease not renewed for {self.ttl_s:g} s (store unreachable?)"
        return self.lost is None

    async def keep(self) -> None:
        """Renew the lease until it is lost or the task is cancelled."""
        period = self.ttl_s / 6
        while self.lost is None:
            await asyncio.sleep(period)
            t = time.monotonic()
            try:
                with transaction(self._sessions) as s:
                    held = renew_lease(s, self.campaign_id, self.me, self.ttl_s)
                    if held:
                        renew_holder(s, self.me.holder, self.ttl_s)
            except Exception as exc:  # the store may be briefly unreachable; retry
                logger.warning("campaign %d: lease renewal failed: %s", self.campaign_id, exc)
                if not self.valid:
                    await self._on_lost(str(self.lost))
                    return
                continue
            if not held:
                self.lost = "another controller took over the campaign's lease"
                await self._on_lost(self.lost)
                return
            self._renewed = t

    def release(self) -> None:
        """Give the lease back (nothing happens if it was lost)."""
        if self.lost is not None:
            return
        try:
            with transaction(self._sessions) as s:
                release_holder(s, self.me.holder)
                release_lease(s, self.campaign_id, self.me)
        except Exception as exc:  # it then expires by itself
            logger.warning("campaign %d: could not release the lease: %s", self.campaign_id, exc)
