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


@cli.group()
def instruments() -> None:
    """Instrument servers."""


@instruments.command("serve")
@click.argument("sim_file", type=click.Path(path_type=Path))
@click.option("--only", multiple=True, help="Serve only these instruments (repeatable).")
@click.option("--journal-dir", type=click.Path(path_type=Path), default=None)
def serve(sim_file: Path, only: tuple[str, ...], journal_dir: Path | None) -> None:
    """Serve the simulated instruments of SIM_FILE over ZeroMQ until interrupted."""
    from sim.serve import main as sim_main

    argv = [str(sim_file)]
    for name in only:
        argv += ["--only", name]
    if journal_dir is not None:
        argv += ["--journal-dir", str(journal_dir)]
    sys.exit(sim_main(argv))


def main() -> None:
    """Console-script entry point."""
    cli()


if __name__ == "__main__":
    main()
