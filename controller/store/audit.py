"""The hash-chained audit record: what happened, who did it, when, and proof it was not edited.

Every event (:func:`controller.store.repo.add_event`), every operator command
(:func:`controller.store.commands.submit_command`) and every entry made through
:func:`record` becomes one :class:`~models.tables.AuditEntryRow` when its transaction
commits. Nothing has to call this module: session hooks (installed with the store's other
hooks) collect the new ``events`` and ``commands`` rows at each flush and append their
entries just before the commit, in the same transaction, so an event cannot be written
without its entry, and a rolled-back event leaves none.

Each entry stores the actor, the server time with its zone, the action, the old and new
value, the reason, and for approvals and rejections what the signature means; it stores the
hash of the entry before it and its own hash: the SHA-256 of the canonical JSON (sorted
keys, no spaces, UTF-8) of all its other columns, the previous hash included
(:func:`entry_hash`). :func:`verify` walks the chain and names the first entry that was
edited, removed, inserted or moved.

Appends are serialised across processes and hosts: the append first updates the chain's
single head row (``audit_head``), which takes a row lock on PostgreSQL (held to commit; a
second appender waits and then reads the head the first one wrote) and the database's
write lock on SQLite (the transaction has already written its events, so it holds that
lock before the head is read). The head is updated last in each transaction, right before
the commit, so the lock is held only for the append itself.

This follows what 21 CFR Part 11 (section 11.10(e), 11.50) asks of an audit trail: secure,
computer-generated, time-stamped entries of operator actions that do not obscure earlier
ones, and signatures that show who signed, when, and what the signing meant.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, event, insert, select, text, update
from sqlalchemy.orm import Session, SessionTransaction, UOWTransaction

from models.errors import StoreError
from models.tables import AuditEntryRow, AuditHeadRow, CommandRow, EventRow

logger = logging.getLogger(__name__)

GENESIS = "0" * 64
"""The ``prev_hash`` of the first entry."""

HEAD_ID = 1
"""The id of the one ``audit_head`` row."""

SIGNATURE_MEANINGS: dict[str, str] = {
    "approve": "approved for execution",
    "reject": "rejected: not to be executed",
}
"""What an operator's command means as a signature, by command name."""

RESOLVE_MEANINGS: dict[str, str] = {
    "rerun": "approved to run again",
    "fail": "declared failed",
}
"""What a ``resolve`` command means as a signature, by its ``action``."""

HASHED_FIELDS = (
    "seq",
    "prev_hash",
    "recorded_at",
    "actor",
    "action",
    "campaign_id",
    "experiment_id",
    "instrument",
    "event_id",
    "command_id",
    "message",
    "old_value",
    "new_value",
    "reason",
    "meaning",
)
"""The columns an entry's hash covers (every column but ``hash``)."""

_PENDING = "sdlab.audit.pending"
_ENTRIES = cast(Table, AuditEntryRow.__table__)
_HEAD = cast(Table, AuditHeadRow.__table__)


def canonical_json(value: Any) -> str:
    """``value`` as canonical JSON: sorted keys, no spaces, non-ASCII kept (UTF-8)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def entry_hash(fields: Mapping[str, Any]) -> str:
    """The SHA-256 (hex) of the canonical JSON of an entry's :data:`HASHED_FIELDS`."""
    return hashlib.sha256(
        canonical_json({k: fields[k] for k in HASHED_FIELDS}).encode("utf-8")
    ).hexdigest()


# --------------------------------------------------------------------------- what is recorded


def record(
    s: Session,
    action: str,
    message: str,
    *,
    actor: str,
    campaign_id: int | None = None,
    experiment_id: int | None = None,
    instrument: str | None = None,
    old_value: Any = None,
    new_value: Any = None,
    reason: str | None = None,
    meaning: str | None = None,
) -> None:
    """Add an entry that is no event, such as a value entered by hand, to the record.

    The entry is appended when the session's transaction commits (not at all if it rolls
    back). Events and operator commands need no call: they are recorded on their own.

    Args:
        s: The session.
        action: What was done (``"manual.result"``).
        message: One line for the reader.
        actor: Who did it.
        campaign_id: The campaign concerned.
        experiment_id: The experiment concerned.
        instrument: The instrument concerned.
        old_value: The value before (JSON-serialisable; ``None``: none).
        new_value: The value after.
        reason: Why.
        meaning: What the entry means as a signature, if it is one.
    """
    s.info.setdefault(_PENDING, []).append(
        _fields(
            action=action,
            actor=actor,
            message=message,
            campaign_id=campaign_id,
            experiment_id=experiment_id,
            instrument=instrument,
            old_value=old_value,
            new_value=new_value,
            reason=reason,
            meaning=meaning,
        )
    )


def _fields(
    *,
    action: str,
    actor: str,
    message: str,
    campaign_id: int | None = None,
    experiment_id: int | None = None,
    instrument: str | None = None,
    event_id: int | None = None,
    command_id: int | None = None,
    old_value: Any = None,
    new_value: Any = None,
    reason: Any = None,
    meaning: str | None = None,
) -> dict[str, Any]:
    return {
        "actor": actor,
        "action": action,
        "campaign_id": campaign_id,
        "experiment_id": experiment_id,
        "instrument": instrument,
        "event_id": event_id,
        "command_id": command_id,
        "message": message,
        "old_value": None if old_value is None else canonical_json(old_value),
        "new_value": None if new_value is None else canonical_json(new_value),
        "reason": None if reason is None else str(reason),
        "meaning": meaning,
    }


def _event_fields(row: EventRow) -> dict[str, Any]:
    """An event's entry: a change's ``from``/``to`` as old/new value, else its details."""
    data = dict(row.data or {})
    reason = data.pop("reason", None)
    if "from" in data or "to" in data:
        old, new = data.get("from"), data.get("to")
    else:
        old, new = None, (data or None)
    return _fields(
        action=row.kind,
        actor=row.actor,
        message=row.message,
        campaign_id=row.campaign_id,
        experiment_id=row.experiment_id,
        instrument=row.instrument,
        event_id=row.id,
        old_value=old,
        new_value=new,
        reason=reason,
    )


def _command_fields(row: CommandRow) -> dict[str, Any]:
    """An operator command's entry: the operator's signature on what they asked for."""
    args = dict(row.args or {})
    meaning = SIGNATURE_MEANINGS.get(row.command)
    if row.command == "resolve":
        meaning = RESOLVE_MEANINGS.get(str(args.get("action")))
    experiment = args.get("experiment")
    return _fields(
        action=f"command.{row.command}",
        actor=row.actor,
        message=f"{row.actor} asked for {row.command} (command {row.id})",
        campaign_id=row.campaign_id,
        experiment_id=experiment if isinstance(experiment, int) else None,
        command_id=row.id,
        new_value={"command": row.command, "args": args},
        reason=args.get("reason"),
        meaning=meaning,
    )


# --------------------------------------------------------------------------- appending


def _collect(session: Session, flush_context: UOWTransaction) -> None:
    """After a flush: remember the events and commands it inserted."""
    new = [obj for obj in session.new if isinstance(obj, (EventRow, CommandRow))]
    if new:
        new.sort(key=lambda obj: (isinstance(obj, EventRow), obj.id))
        session.info.setdefault(_PENDING, []).extend(new)


def _append_pending(session: Session) -> None:
    """Before the outermost commit: append the entries of everything collected."""
    if session.in_nested_transaction():
        return  # a savepoint: its rows are appended when the transaction commits
    session.flush()
    pending = session.info.pop(_PENDING, [])
    entries: list[dict[str, Any]] = []
    for item in pending:
        if isinstance(item, EventRow):
            if item in session:  # not rolled back with a savepoint
                entries.append(_event_fields(item))
        elif isinstance(item, CommandRow):
            if item in session:
                entries.append(_command_fields(item))
        else:
            entries.append(item)
    if entries:
        append(session, entries)


def _forget_pending(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_PENDING, None)


def append(s: Session, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chain ``entries`` onto the record, in order, inside the session's transaction.

    Called by the commit hook; call it directly only to append entries built with the
    same fields (tests do).

    Args:
        s: The session, in a transaction.
        entries: Each entry's fields but ``seq``, ``prev_hash``, ``recorded_at`` and ``hash``.

    Returns:
        The complete entries, as written.

    Raises:
        StoreError: If the chain's head row is missing (the database was not migrated).
    """
    # Lock first, read second: the UPDATE takes the head's row lock (PostgreSQL) or the
    # write lock (SQLite) and returns the head as it is once the lock is ours.
    head = s.execute(
        update(_HEAD)
        .where(_HEAD.c.id == HEAD_ID)
        .values(seq=_HEAD.c.seq + len(entries))
        .returning(_HEAD.c.seq, _HEAD.c.hash)
    ).one_or_none()
    if head is None:
        raise StoreError("the audit record has no head row: migrate the database")
    seq = int(head.seq) - len(entries)
    prev = str(head.hash)
    now = _server_time(s)
    written: list[dict[str, Any]] = []
    for fields in entries:
        seq += 1
        entry = {**fields, "seq": seq, "prev_hash": prev, "recorded_at": now}
        entry["hash"] = prev = entry_hash(entry)
        written.append(entry)
    s.execute(insert(_ENTRIES), written)
    s.execute(update(_HEAD).where(_HEAD.c.id == HEAD_ID).values(hash=prev))
    return written


def _server_time(s: Session) -> str:
    """The time of the append, ISO 8601 in UTC with its zone.

    On PostgreSQL the database server's clock (``clock_timestamp()``, read after the head
    lock is held, so times follow the chain's order across hosts); on SQLite, whose server
    is this process, this machine's clock.
    """
    if s.get_bind().dialect.name == "postgresql":
        value = s.execute(text("SELECT clock_timestamp()")).scalar_one()
        when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    else:
        when = datetime.now(UTC)
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def install() -> None:
    """Install the session hooks that feed the record (done by :mod:`controller.store`)."""
    event.listen(Session, "after_flush", _collect)
    event.listen(Session, "before_commit", _append_pending)
    event.listen(Session, "after_transaction_end", _forget_pending)


# --------------------------------------------------------------------------- verifying


@dataclass(frozen=True)
class Verdict:
    """What :func:`verify` found.

    Attributes:
        entries: How many entries were read.
        head_hash: The hash of the last entry (what to write down to notice a truncation
            later); :data:`GENESIS` for an empty record.
        broken_at: The ``seq`` of the first broken entry; ``None`` when the chain is intact.
        problem: What is wrong there.
    """

    entries: int
    head_hash: str
    broken_at: int | None = None
    problem: str | None = None

    @property
    def intact(self) -> bool:
        """Whether every entry is as it was written and none is missing."""
        return self.broken_at is None


def verify(s: Session, *, batch: int = 1000) -> Verdict:
    """Walk the chain from its first entry and report the first one that is broken.

    An entry whose columns no longer give its hash was edited; one whose ``prev_hash`` is
    not its predecessor's hash, or whose ``seq`` skips, follows an entry that was removed,
    inserted or moved; a head that is not the last entry means entries were cut off the end.

    Args:
        s: The session.
        batch: Entries read per round trip.

    Returns:
        The verdict.
    """
    expected = 1
    prev = GENESIS
    count = 0
    rows = s.execute(select(_ENTRIES).order_by(_ENTRIES.c.seq).execution_options(yield_per=batch))
    for row in rows.mappings():
        entry = dict(row)
        seq = int(entry["seq"])
        count += 1
        if seq != expected:
            missing = (
                f"entry {expected} before it is"
                if seq == expected + 1
                else f"entries {expected}-{seq - 1} before it are"
            )
            return Verdict(count, prev, seq, f"{missing} missing")
        if entry["prev_hash"] != prev:
            return Verdict(
                count,
                prev,
                seq,
                f"it does not follow entry {seq - 1} (its prev_hash is not that entry's hash): "
                "an entry before it was changed, removed, inserted or moved",
            )
        if entry_hash(entry) != entry["hash"]:
            return Verdict(count, prev, seq, "its contents do not match its hash: it was edited")
        prev = str(entry["hash"])
        expected += 1
    head = s.execute(select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == HEAD_ID)).one_or_none()
    if head is None:
        return Verdict(count, prev, expected, "the chain's head row is missing")
    if int(head.seq) != expected - 1 or head.hash != prev:
        return Verdict(
            count,
            prev,
            expected,
            f"the chain ends at entry {expected - 1} but its head is entry {head.seq}: "
            "entries were removed from its end",
        )
    return Verdict(count, prev)
