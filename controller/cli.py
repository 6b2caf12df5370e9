"""The ``sdlab`` command line.

Exit codes: 0 success (a campaign reached its budget), 1 any other failure, 2 an invalid
campaign file (the message names the file, the key path and what is wrong).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
from rich.console import Console

from controller.runner import EXIT_FAILED, EXIT_INVALID, RunOptions
from models.errors import InvalidCampaignError, SdlabError

DEFAULT_DB = "sqlite:///sdlab.db"

db_option = click.option(
    "--db",
    "db_url",
    default=DEFAULT_DB,
    show_default=True,
    help="SQLAlchemy URL of the experiment store (sqlite:///file.db, postgresql://...).",
)


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
def run(
    campaign: Path,
    db_url: str,
    budget: int | None,
    seed: int | None,
    no_progress: bool,
    ray_address: str | None,
) -> None:
    """Run CAMPAIGN (a TOML file) to its budget; the same command resumes it."""
    from controller.runner import run as run_campaign

    opts = RunOptions(
        db_url=db_url,
        budget=budget,
        seed=seed,
        progress=not no_progress,
        ray_address=ray_address,
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
@click.argument("command", type=click.Choice(["pause", "resume", "abort"]))
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds to wait for the controller's answer.",
)
def control(db_url: str, campaign: str, command: str, wait_s: float) -> None:
    """Pause, resume or abort a campaign (through the store, as the dashboard does).

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
def instruments() -> None:
    """Instrument servers."""


@instruments.command("serve")
@click.argument("sim_file", type=click.Path(path_type=Path))
@click.option("--only", multiple=True, help="Serve only these instruments (repeatable).")
@click.option("--journal-dir", type=click.Path(path_type=Path), default=None)
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
    sim_file: Path,
    only: tuple[str, ...],
    journal_dir: Path | None,
    curve_secret_key: Path | None,
    curve_allow: Path | None,
) -> None:
    """Serve the simulated instruments of SIM_FILE over ZeroMQ until interrupted."""
    from sim.serve import main as sim_main

    argv = [str(sim_file)]
    for name in only:
        argv += ["--only", name]
    if journal_dir is not None:
        argv += ["--journal-dir", str(journal_dir)]
    if curve_secret_key is not None:
        argv += ["--curve-secret-key", str(curve_secret_key)]
    if curve_allow is not None:
        argv += ["--curve-allow", str(curve_allow)]
    sys.exit(sim_main(argv))


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
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


@cli.group()
def users() -> None:
    """Dashboard users and their API tokens."""


@users.command("add")
@click.argument("name")
@click.option(
    "--role", type=click.Choice(["viewer", "operator", "admin"]), required=True, help="Role."
)
@click.option("--password", is_flag=True, help="Also ask for a password for the login form.")
@db_option
def users_add(name: str, role: str, password: bool, db_url: str) -> None:
    """Create user NAME and print their API token (shown this once only)."""
    from controller.api.settings import ApiSettings
    from controller.api.users import UserError, add_user
    from controller.store import make_engine, migrate, session_factory, transaction

    secret = (
        click.prompt("password", hide_input=True, confirmation_prompt=True) if password else None
    )
    engine = make_engine(db_url)
    try:
        migrate(engine)
        with transaction(session_factory(engine)) as s:
            _, token = add_user(
                s, name, role, iterations=ApiSettings().kdf_iterations, password=secret
            )
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    finally:
        engine.dispose()
    click.echo(f"user {name} ({role}) created; API token (shown once, keep it safe):")
    click.echo(token)


@users.command("list")
@db_option
def users_list(db_url: str) -> None:
    """List users and their roles."""
    from controller.api.users import list_users
    from controller.store import make_engine, migrate, session_factory, transaction

    engine = make_engine(db_url)
    migrate(engine)
    with transaction(session_factory(engine)) as s:
        for u in list_users(s):
            state = "disabled" if u.disabled else "active"
            click.echo(f"{u.name}\t{u.role}\t{state}")
    engine.dispose()


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


def main() -> None:
    """Console-script entry point."""
    cli()


if __name__ == "__main__":
    main()
