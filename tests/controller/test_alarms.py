"""Alarm webhooks are delivered at least once, with the store as the outbox."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from controller.alarms import Alarms
from controller.store import transaction
from models.campaign import AlarmSpec
from models.tables import EventRow


class Hook(BaseHTTPRequestHandler):
    """A webhook that answers 503 while ``down`` and records what it accepts."""

    received: list[dict[str, Any]] = []
    down = True

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if Hook.down:
            self.send_response(503)
        else:
            Hook.received.append(body)
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook_url() -> Iterator[str]:
    httpd = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    Hook.received, Hook.down = [], True
    yield f"http://127.0.0.1:{httpd.server_port}/hook"
    httpd.shutdown()


def alarms_for(
    url: str, factory: sessionmaker[Session], campaign_id: int, tasks: list[Any]
) -> Alarms:
    spec = AlarmSpec(webhook=url, webhook_attempts=3, webhook_timeout_s=2)

    def spawn(coro: Coroutine[Any, Any, None]) -> None:
        tasks.append(asyncio.get_running_loop().create_task(coro))

    return Alarms(spec, "demo", campaign_id, factory, spawn, backoff_s=0.05)


def kinds(factory: sessionmaker[Session]) -> list[str]:
    with transaction(factory) as s:
        return [e.kind for e in s.scalars(select(EventRow).order_by(EventRow.id)).all()]


def test_an_alarm_cut_off_by_a_crash_is_sent_again_by_the_next_controller(
    hook_url: str, factory: sessionmaker[Session], campaign_id: int
) -> None:
    async def first_controller() -> int:
        tasks: list[Any] = []
        alarms = alarms_for(hook_url, factory, campaign_id, tasks)
        alarms.raise_("instrument_quarantined", "furnace-1 quarantined", instrument="furnace-1")
        await asyncio.sleep(0.02)  # the webhook is down: the first attempt fails ...
        for t in tasks:  # ... and the controller dies while it waits to retry
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with transaction(factory) as s:
            return s.scalars(select(EventRow.id).where(EventRow.kind.like("alarm.%"))).one()

    alarm_id = asyncio.run(first_controller())
    assert Hook.received == []
    assert "webhook.delivered" not in kinds(factory)

    async def next_controller() -> int:
        tasks: list[Any] = []
        alarms = alarms_for(hook_url, factory, campaign_id, tasks)
        n = alarms.redeliver_pending()
        await asyncio.gather(*tasks)
        return n

    Hook.down = False
    assert asyncio.run(next_controller()) == 1
    [body] = Hook.received
    assert body["id"] == alarm_id
    assert body["alarm"] == "instrument_quarantined"
    assert body["instrument"] == "furnace-1"
    assert kinds(factory)[-1] == "webhook.delivered"
    assert asyncio.run(next_controller()) == 0  # delivered: never sent again
    assert len(Hook.received) == 1


def test_an_alarm_the_webhook_never_took_is_recorded_as_failed_and_not_retried_forever(
    hook_url: str, factory: sessionmaker[Session], campaign_id: int
) -> None:
    async def controller(raise_one: bool) -> int:
        tasks: list[Any] = []
        alarms = alarms_for(hook_url, factory, campaign_id, tasks)
        n = alarms.redeliver_pending()
        if raise_one:
            alarms.raise_("decision_needed", "experiment 3 waits for an operator")
        await asyncio.gather(*tasks)
        return n

    assert asyncio.run(controller(True)) == 0
    assert kinds(factory)[-1] == "webhook.failed"
    Hook.down = False
    assert asyncio.run(controller(False)) == 0  # its attempts ran out: it was logged
    assert Hook.received == []
