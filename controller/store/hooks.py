"""ORM hooks that keep the store's rows honest.

- ``events`` is append-only: flushing a change to, or the deletion of, an
  :class:`~models.tables.EventRow` raises :class:`~models.errors.StoreError`.
- Every event and operator command written enters the hash-chained audit record when its
  transaction commits (:mod:`controller.store.audit`).

Importing :mod:`controller.store` installs the hooks (once).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Mapper

from controller.store import audit
from models.errors import StoreError
from models.tables import EventRow

_installed = False


def _refuse_event_change(mapper: Mapper[Any], connection: Any, target: EventRow) -> None:
    raise StoreError(f"events are append-only: event {target.id} cannot be changed or deleted")


def install() -> None:
    """Install the hooks; later calls do nothing."""
    global _installed
    if _installed:
        return
    event.listen(EventRow, "before_update", _refuse_event_change)
    event.listen(EventRow, "before_delete", _refuse_event_change)
    audit.install()
    _installed = True
