"""What every ``sdlab`` command group shares: the store option and the CLI's actor name.

:mod:`controller.cli`, :mod:`controller.lab_cli` and :mod:`controller.users_cli` take them
from here, so ``--db`` means the same in every command.
"""

from __future__ import annotations

import getpass

import click

__all__ = ["DEFAULT_DB", "cli_actor", "db_option"]

DEFAULT_DB = "sqlite:///sdlab.db"

db_option = click.option(
    "--db",
    "db_url",
    default=DEFAULT_DB,
    show_default=True,
    help="SQLAlchemy URL of the experiment store (sqlite:///file.db, postgresql://...).",
)


def cli_actor() -> str:
    """The actor recorded for a change made from the command line: ``cli:<login name>``."""
    return f"cli:{getpass.getuser()}"
