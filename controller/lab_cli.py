"""``sdlab lab``: record a lab file, show it, and change what the lab's campaigns share.

- ``sdlab lab apply LAB.toml`` validates the file (exit 2 naming the file and key path, as
  for campaign files) and records it in the store; applying it again updates it.
- ``sdlab lab show NAME`` prints its instruments (with their state, and who holds them),
  its resources' units and the campaigns waiting.
- ``sdlab lab priority CAMPAIGN N`` sets a campaign's priority: higher goes first when
  campaigns wait for the same lab instruments or resources. Running controllers read it
  at their next plan.
- ``sdlab lab instrument LAB NAME in-service|out-of-service`` takes a lab instrument out of
  service for every campaign, or puts it back.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from controller.cli_options import db_option
from models.errors import EXIT_FAILED, EXIT_INVALID, InvalidCampaignError, SdlabError

logger = logging.getLogger(__name__)


@click.group("lab")
def lab() -> None:
    """The lab file: instruments and resources shared by several campaigns."""


@lab.command("apply")
@click.argument("lab_file", type=click.Path(path_type=Path))
@db_option
def apply(lab_file: Path, db_url: str) -> None:
    """Validate LAB_FILE and record it in the store (again: update it)."""
    from controller.store import make_engine, migrate, session_factory, transaction
    from controller.store.lab import apply_lab
    from models.lab import load_lab

    try:
        spec = load_lab(lab_file)
    except InvalidCampaignError as exc:
        click.echo(f"invalid lab file {exc}", err=True)
        sys.exit(EXIT_INVALID)
    engine = make_engine(db_url)
    try:
        migrate(engine)
        with transaction(session_factory(engine)) as s:
            _, changes = apply_lab(s, spec, str(lab_file))
    except InvalidCampaignError as exc:
        click.echo(f"invalid lab file {exc}", err=True)
        sys.exit(EXIT_INVALID)
    except SdlabError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    finally:
        engine.dispose()
    for line in changes or [f"lab {spec.lab.name} is recorded already; nothing changed"]:
        click.echo(line)


@lab.command("show")
@click.argument("name")
@db_option
def show(name: str, db_url: str) -> None:
    """Print lab NAME: its instruments, resources, grants and waiting campaigns."""
    from controller.store import make_engine, migrate, session_factory, transaction
    from controller.store.lab import get_lab, snapshot

    engine = make_engine(db_url)
    try:
        migrate(engine)
        with transaction(session_factory(engine), read_only=True) as s:
            found = get_lab(s, name)
            if found is None:
                click.echo(f"error: lab {name!r} is not in the store", err=True)
                sys.exit(EXIT_FAILED)
            row, spec = found
            snap = snapshot(s, row.id)
    finally:
        engine.dispose()
    click.echo(
        f"lab {spec.lab.name}" + (f": {spec.lab.description}" if spec.lab.description else "")
    )
    if spec.gateways:
        click.echo("gateways:")
        for g in spec.gateways:
            click.echo(f"  {g.name} on {g.host}")
    click.echo("instruments:")
    for inst in spec.instruments:
        state = snap.down.get(inst.name, "in service")
        held = snap.held.get(inst.name)
        by = f", held by campaign {held.campaign} (exp {held.experiment_id})" if held else ""
        gw = f" via {inst.gateway}" if inst.gateway else ""
        keyed = " CURVE" if inst.curve is not None and inst.curve.server_public_key else ""
        click.echo(f"  {inst.name} [{inst.kind}] {inst.address}{gw}{keyed}: {state}{by}")
    if spec.resources:
        click.echo("resources:")
        for res in spec.resources:
            units = []
            for unit in res.unit_names:
                held = snap.held.get(unit)
                units.append(f"{unit} (campaign {held.campaign})" if held else unit)
            click.echo(f"  {res.name}: {', '.join(units)}")
    if snap.waits:
        click.echo("waiting:")
        for w in sorted(snap.waits, key=lambda w: w.rank()):
            click.echo(
                f"  campaign {w.campaign} (priority {w.priority}) since "
                f"{w.since:%H:%M:%S}: {', '.join(w.pools)}"
            )


@lab.command("priority")
@click.argument("campaign")
@click.argument("priority", type=click.IntRange(-1000, 1000))
@db_option
def priority(campaign: str, priority: int, db_url: str) -> None:
    """Set CAMPAIGN's PRIORITY (higher goes first for shared lab units)."""
    from controller.store import add_event, make_engine, migrate, session_factory, transaction
    from controller.store.lab import set_priority

    engine = make_engine(db_url)
    try:
        migrate(engine)
        with transaction(session_factory(engine)) as s:
            row = set_priority(s, campaign, priority)
            add_event(
                s,
                "campaign.priority",
                f"priority set to {priority}",
                campaign_id=row.id,
                data={"priority": priority},
                actor="cli",
            )
    except SdlabError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    finally:
        engine.dispose()
    click.echo(f"campaign {campaign}: priority {priority}")


@lab.command("instrument")
@click.argument("lab_name")
@click.argument("instrument")
@click.argument("state", type=click.Choice(["in-service", "out-of-service"]))
@click.option("--reason", default="taken out by an operator", show_default=True)
@db_option
def instrument(lab_name: str, instrument: str, state: str, reason: str, db_url: str) -> None:
    """Put a lab INSTRUMENT in or out of service for every campaign of the lab."""
    from controller.store import make_engine, migrate, session_factory, transaction
    from controller.store.lab import lab_row, set_instrument_state
    from models.status import LabInstrumentState

    new = (
        LabInstrumentState.IN_SERVICE
        if state == "in-service"
        else LabInstrumentState.OUT_OF_SERVICE
    )
    engine = make_engine(db_url)
    try:
        migrate(engine)
        with transaction(session_factory(engine)) as s:
            row = lab_row(s, lab_name)
            if row is None:
                raise InvalidCampaignError(None, [("lab", f"lab {lab_name!r} is not in the store")])
            set_instrument_state(s, row.id, instrument, new, reason=reason, actor="cli")
    except SdlabError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    finally:
        engine.dispose()
    click.echo(f"{instrument}: {state}")
