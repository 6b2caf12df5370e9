"""The ``sdlab`` command line.

Exit codes: 0 success (a campaign reached its budget), 1 any other failure, 2 an invalid
campaign file (the message names the file, the key path and what is wrong).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console

from controller.cli_options import cli_actor, db_option
from models.errors import EXIT_FAILED, EXIT_INVALID, InvalidCampaignError, SdlabError

if TYPE_CHECKING:
    from types import FrameType

    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session, sessionmaker

SHUTDOWN_GRACE_S = 5
"""Seconds ``sdlab serve`` lets open requests finish once asked to stop, then cancels them
(the live streams end by themselves within a poll interval)."""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-level",
    default="WARNING",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
def cli(log_level: str) -> None:
    """sdlab: closed-loop self-driving-lab controller."""
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _invalid(exc: InvalidCampaignError) -> None:
    # plain text: no wrapping, and key paths like objectives[0] are not markup
    click.echo(f"invalid campaign {exc}", err=True)
    sys.exit(EXIT_INVALID)


@cli.command()
@click.argument("campaign", type=click.Path(path_type=Path))
@db_option
@click.option("--budget", type=click.IntRange(min=1), help="Experiments to complete in total.")
@click.option("--seed", type=click.IntRange(min=0), help="Seed of a new campaign's planner.")
@click.option("--no-progress", is_flag=True, help="Do not draw the progress bar.")
@click.option("--ray-address", default=None, help="Join this Ray cluster (default: start one).")
@click.option(
    "--simulate",
    is_flag=True,
    help="Run every instrument that names a driver on its driver's simulated backend.",
)
@click.option(
    "--lease-s",
    type=click.FloatRange(min=1.0, max=3600.0),
    default=None,
    help="Lifetime of the controller's lease and of its lab grants (default 30 s).",
)
@click.option(
    "--lab-poll-s",
    type=click.FloatRange(min=0.005, max=60.0),
    default=None,
    help="How often waiting steps look whether the lab freed a unit (default 0.02 s; on "
    "PostgreSQL a notification wakes them, and they look only while they cannot listen).",
)
def run(
    campaign: Path,
    db_url: str,
    budget: int | None,
    seed: int | None,
    no_progress: bool,
    ray_address: str | None,
    simulate: bool,
    lease_s: float | None,
    lab_poll_s: float | None,
) -> None:
    """Run CAMPAIGN (a TOML file) to its budget; the same command resumes it."""
    from controller.runner import RunOptions
    from controller.runner import run as run_campaign
    from controller.work import ControllerOptions

    defaults = ControllerOptions()
    opts = RunOptions(
        controller=ControllerOptions(
            lease_s=defaults.lease_s if lease_s is None else lease_s,
            lab_poll_s=defaults.lab_poll_s if lab_poll_s is None else lab_poll_s,
        ),
        db_url=db_url,
        budget=budget,
        seed=seed,
        progress=not no_progress,
        ray_address=ray_address,
        simulate=simulate,
    )
    try:
        code = run_campaign(campaign, opts)
    except InvalidCampaignError as exc:
        _invalid(exc)
    except SdlabError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    sys.exit(code)


@cli.command()
@db_option
@click.option("--campaign", default=None, help="Only this campaign.")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv")
def export(db_url: str, campaign: str | None, fmt: str) -> None:
    """Print one row per experiment (parameters, objectives, decision, instruments, times)."""
    from controller.report import export_text
    from controller.store import make_engine, migrate, session_factory, transaction

    engine = make_engine(db_url)
    migrate(engine)
    with transaction(session_factory(engine)) as s:
        click.echo(export_text(s, campaign, fmt), nl=False)
    engine.dispose()


@cli.command()
@db_option
def status(db_url: str) -> None:
    """List campaigns with their experiment counts per status."""
    from controller.report import status_table
    from controller.store import make_engine, migrate, session_factory, transaction

    engine = make_engine(db_url)
    migrate(engine)
    with transaction(session_factory(engine)) as s:
        Console().print(status_table(s))
    engine.dispose()


@cli.command()
@db_option
@click.argument("campaign")
@click.argument("command", type=click.Choice(["pause", "resume", "abort", "estop", "reset"]))
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds to wait for the controller's answer.",
)
def control(db_url: str, campaign: str, command: str, wait_s: float) -> None:
    """Pause, resume or abort a campaign, or stop it in an emergency (through the store,
    as the dashboard does).

    ``estop`` cancels every action in flight at once, sends every instrument to its safe
    state and holds the campaign ESTOPPED; ``reset`` releases it to PAUSED (then
    ``resume``). ``abort`` instead lets the steps already sent finish.

    Exits 0 once the controller applied it, 1 if it refused or nobody applied it in time
    (the command then waits for the next controller that runs the campaign).
    """
    from controller.control import send_command

    try:
        out = send_command(db_url, campaign, command, wait_s=wait_s)
    except SdlabError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    if out.status.value == "APPLIED":
        click.echo(f"{command}: applied ({out.result})")
        return
    if out.status.value == "REFUSED":
        click.echo(f"{command}: refused: {out.result}", err=True)
    else:
        why = (
            "its controller has not answered yet; the command stays queued"
            if out.controller_live
            else "no controller is running the campaign; its next run applies it"
        )
        click.echo(f"{command}: command {out.command_id} pending: {why}", err=True)
    sys.exit(EXIT_FAILED)


@cli.group()
def audit() -> None:
    """The hash-chained audit record (docs/audit.md)."""


@audit.command("verify")
@db_option
def audit_verify(db_url: str) -> None:
    """Check that no audit entry was edited, removed, inserted or moved.

    Exits 0 when the chain is intact (printing its length and last hash), 1 naming the
    first broken entry, or when the store cannot be read.
    """
    from controller.store import make_engine, migrate, session_factory, transaction
    from controller.store.audit import verify

    engine = make_engine(db_url)
    try:
        migrate(engine)
        with transaction(session_factory(engine)) as s:
            verdict = verify(s)
    except SdlabError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    finally:
        engine.dispose()
    if not verdict.intact:
        click.echo(
            f"audit record BROKEN at entry {verdict.broken_at}: {verdict.problem} "
            f"({verdict.entries} entries read)",
            err=True,
        )
        sys.exit(EXIT_FAILED)
    click.echo(f"audit record intact: {verdict.entries} entries, last hash {verdict.head_hash}")


@cli.group()
def instruments() -> None:
    """Instrument servers."""


@instruments.command("serve")
@click.argument("lab_file", type=click.Path(path_type=Path))
@click.option("--only", multiple=True, help="Serve only these instruments (repeatable).")
@click.option("--journal-dir", type=click.Path(path_type=Path), default=None)
@click.option("--simulate", is_flag=True, help="Run every driver on its simulated backend.")
@click.option(
    "--curve-secret-key",
    type=click.Path(path_type=Path),
    default=None,
    help="Serve over CURVE with this secret key file (NAME.key_secret).",
)
@click.option(
    "--curve-allow",
    type=click.Path(path_type=Path),
    default=None,
    help="Directory of the public keys (*.key) of the clients to answer.",
)
def serve(
    lab_file: Path,
    only: tuple[str, ...],
    journal_dir: Path | None,
    simulate: bool,
    curve_secret_key: Path | None,
    curve_allow: Path | None,
) -> None:
    """Host the instruments of LAB_FILE (a gateway, simulation or campaign file) over
    ZeroMQ until interrupted: each entry's driver on its own endpoint."""
    from instruments.gateway import main as gateway_main

    argv = [str(lab_file)]
    for name in only:
        argv += ["--only", name]
    if journal_dir is not None:
        argv += ["--journal-dir", str(journal_dir)]
    if simulate:
        argv.append("--simulate")
    if curve_secret_key is not None:
        argv += ["--curve-secret-key", str(curve_secret_key)]
    if curve_allow is not None:
        argv += ["--curve-allow", str(curve_allow)]
    if _asks_for_simulators(lab_file):
        from sim.drivers import load_builtin_drivers

        load_builtin_drivers()
    sys.exit(gateway_main(argv, prog="sdlab instruments serve"))


def _asks_for_simulators(path: Path) -> bool:
    """Whether a gateway file has ``[instruments.simulated]`` tables (sdlab's simulators)."""
    from models.gateway import load_gateway

    try:
        return any(e.spec.simulator is not None for e in load_gateway(path).entries)
    except InvalidCampaignError:
        return False  # the gateway reports it


@cli.group()
def drivers() -> None:
    """Instrument drivers: built in, and from installed packages (sdlab.drivers)."""


@drivers.command("list")
def drivers_list() -> None:
    """List every driver: its package, whether it can run simulated, and its actions."""
    from instruments.catalog import driver_catalog
    from sim.drivers import load_builtin_drivers

    load_builtin_drivers()  # sdlab's simulators, also from a checkout without entry points
    try:
        catalog = driver_catalog()
    except SdlabError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    rows = [("DRIVER", "PACKAGE", "VERSION", "SIMULATED", "ACTIONS")]
    rows += [
        (d.name, d.distribution, d.version, "yes" if d.simulated else "no", d.actions_text)
        for d in catalog
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        click.echo(
            "  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4]
        )


@cli.group()
def driver() -> None:
    """Write a new driver."""


@driver.command("new")
@click.argument("name")
@click.argument("directory", type=click.Path(path_type=Path))
def driver_new(name: str, directory: Path) -> None:
    """Write an installable driver package NAME into DIRECTORY (pip install -e it)."""
    from instruments.kit import KitError, new_driver_package

    try:
        files = new_driver_package(name, directory)
    except KitError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_INVALID)
    for path in files:
        click.echo(str(path))
    click.echo(
        f"driver {name!r} written; next: pip install -e {directory} && sdlab drivers list",
        err=True,
    )


@cli.command("serve")
@db_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=Path(".sdlab"),
    show_default=True,
    help="Where uploaded campaign files and the logs of started runs are kept.",
)
@click.option("--ray-address", default=None, help="Ray cluster that started runs join.")
@click.option("--secure-cookies", is_flag=True, help="Session cookie over HTTPS only.")
@click.option(
    "--insecure",
    is_flag=True,
    help="Allow a non-loopback --host without --secure-cookies (cookies over plain HTTP).",
)
@click.option("--sqlite-deferred", is_flag=True, hidden=True)  # benchmarks/dashboard_load.py
def serve_dashboard(
    db_url: str,
    host: str,
    port: int,
    data_dir: Path,
    ray_address: str | None,
    secure_cookies: bool,
    insecure: bool,
    sqlite_deferred: bool,
) -> None:
    """Serve the operator dashboard (JSON API, live updates, pages) with uvicorn.

    A --host other than loopback needs --secure-cookies (behind a TLS proxy) or, knowingly,
    --insecure.
    """
    import uvicorn

    from controller.api.app import create_app
    from controller.api.settings import ApiSettings
    from controller.runner import absolute_db_url

    loopback = host in ("127.0.0.1", "localhost", "::1")
    if not loopback and not (secure_cookies or insecure):
        click.echo(
            f"error: --host {host} serves other machines: pass --secure-cookies (behind a "
            "TLS-terminating proxy) or, to send session cookies over plain HTTP, --insecure",
            err=True,
        )
        sys.exit(EXIT_FAILED)
    settings = ApiSettings(
        db_url=absolute_db_url(db_url),
        data_dir=data_dir.resolve(),
        host=host,
        port=port,
        ray_address=ray_address,
        secure_cookies=secure_cookies,
        sqlite_immediate_writes=not sqlite_deferred,
    )
    try:
        app = create_app(settings)
    except SdlabError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    if not loopback:
        click.echo(f"warning: serving on {host}, not only this machine", err=True)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )

    class Server(uvicorn.Server):
        """uvicorn's server, which also tells the live streams to end when asked to stop:
        uvicorn waits for open responses, and a browser's stream lasts up to ten minutes."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            app.state.stopping.set()
            super().handle_exit(sig, frame)

    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C once stopped
        Server(config).run()


@cli.group()
def tasks() -> None:
    """Tasks of manual instruments (people as instruments): list, claim, done, fail."""


def _task_store(db_url: str) -> tuple[Engine, sessionmaker[Session]]:
    from controller.store import make_engine, migrate, session_factory

    engine = make_engine(db_url)
    migrate(engine)
    return engine, session_factory(engine)


@tasks.command("list")
@db_option
@click.option("--all", "show_all", is_flag=True, help="Finished tasks too.")
def tasks_list(db_url: str, show_all: bool) -> None:
    """List open tasks (OPEN or CLAIMED): id, status, instrument, action, instructions,
    parameters and the outputs to enter."""
    from controller.store import transaction
    from controller.store.tasks import OPEN_TASKS, list_tasks

    engine, factory = _task_store(db_url)
    try:
        with transaction(factory) as s:
            rows = list_tasks(s, None if show_all else OPEN_TASKS)
            if not rows:
                click.echo("no open task" if not show_all else "no task")
            for r in rows:
                outs = ", ".join(_output_text(o) for o in r.outputs)
                who = f" by {r.claimed_by}" if r.claimed_by else ""
                click.echo(f"{r.id}\t{r.status.value}{who}\t{r.instrument}\t{r.action}")
                click.echo(f"\t{r.instructions}")
                click.echo(f"\tparameters: {r.parameters}; enter: {outs}")
                if r.values is not None or r.reason:
                    click.echo(f"\tvalues: {r.values}; reason: {r.reason}")
    finally:
        engine.dispose()


def _output_text(o: dict[str, Any]) -> str:
    lo, hi = o.get("minimum"), o.get("maximum")
    limits = "" if lo is None and hi is None else f" in [{lo}, {hi}]"
    unit = f" {o['unit']}" if o.get("unit") else ""
    return f"{o['name']} ({o.get('type', 'number')}{limits}){unit}"


def _task_change(db_url: str, what: str, task_id: int, arg: object) -> None:
    from controller.store import transaction
    from controller.store.tasks import TaskInputError, claim_task, complete_task, fail_task

    engine, factory = _task_store(db_url)
    try:
        with transaction(factory) as s:
            if what == "claim":
                row = claim_task(s, task_id, cli_actor())
            elif what == "done":
                row = complete_task(s, task_id, cli_actor(), arg)  # type: ignore[arg-type]
            else:
                row = fail_task(s, task_id, cli_actor(), str(arg))
            click.echo(f"task {row.id}: {row.status.value}")
    except (TaskInputError, SdlabError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    finally:
        engine.dispose()


@tasks.command("claim")
@db_option
@click.argument("task_id", type=click.IntRange(min=1))
def tasks_claim(db_url: str, task_id: int) -> None:
    """Take task TASK_ID (you are then expected to do it)."""
    _task_change(db_url, "claim", task_id, None)


@tasks.command("done")
@db_option
@click.argument("task_id", type=click.IntRange(min=1))
@click.argument("values", nargs=-1, required=True)
def tasks_done(db_url: str, task_id: int, values: tuple[str, ...]) -> None:
    """Enter the outputs of claimed task TASK_ID as NAME=VALUE pairs (checked against the
    declared types and limits; a bad value is refused, naming it)."""
    entered: dict[str, str] = {}
    for pair in values:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            click.echo(f"error: {pair!r}: expected NAME=VALUE", err=True)
            sys.exit(EXIT_FAILED)
        entered[name.strip()] = value
    _task_change(db_url, "done", task_id, entered)


@tasks.command("fail")
@db_option
@click.argument("task_id", type=click.IntRange(min=1))
@click.option("--reason", required=True, help="Why the task could not be done.")
def tasks_fail(db_url: str, task_id: int, reason: str) -> None:
    """Mark task TASK_ID failed: its step fails with the reason."""
    _task_change(db_url, "fail", task_id, reason)


@cli.group()
def keys() -> None:
    """CURVE keys for encrypted instrument links."""


@keys.command("generate")
@click.argument("directory", type=click.Path(path_type=Path))
@click.argument("name")
def generate(directory: Path, name: str) -> None:
    """Write a CURVE key pair DIRECTORY/NAME.key (public) and NAME.key_secret (secret)."""
    from instruments.security import generate_keys

    try:
        public, secret = generate_keys(directory, name)
    except (OSError, ValueError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(f"public key: {public}\nsecret key: {secret} (keep it private)")


def _add_commands() -> None:
    from controller.lab_cli import lab
    from controller.users_cli import users

    cli.add_command(lab)
    cli.add_command(users)


_add_commands()


def main() -> None:
    """Console-script entry point."""
    cli()


if __name__ == "__main__":
    main()
