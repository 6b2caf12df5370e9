"""``sdlab users``: the dashboard's users, from the machine that holds the store.

The same changes an admin makes on the dashboard's users page (``/users``), for the first
admin of a new lab and for a lab whose admins are locked out: whoever can reach the
database can change its users, so these commands are not limited the way the dashboard
stops an admin demoting or disabling themselves. Every change is an event whose actor is
``cli:<login name>``.

- ``sdlab users add NAME --role ROLE [--password]`` creates a user and prints their first
  API token, once;
- ``sdlab users list`` prints every user, role and state;
- ``sdlab users role NAME ROLE`` gives a user another role;
- ``sdlab users disable NAME`` revokes their tokens and ends their browser sessions;
  ``sdlab users enable NAME`` lets them log in again (old tokens stay revoked);
- ``sdlab users token NAME`` revokes their API tokens and prints a new one, once;
- ``sdlab users password NAME`` asks for a new password (their sessions end).

Exit codes: 0 done, 1 no such user or a rule broken (the message names the field).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from controller.cli_options import cli_actor, db_option
from models.errors import EXIT_FAILED

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from models.tables import UserRow

ROLES = ["viewer", "operator", "admin"]


def _iterations() -> int:
    from controller.api.settings import ApiSettings

    return ApiSettings().kdf_iterations


@contextmanager
def _store(db_url: str) -> Iterator[Session]:
    """One transaction on the migrated store; a user error exits 1 with its message."""
    from controller.api.users import UserError
    from controller.store import make_engine, migrate, session_factory, transaction

    engine = make_engine(db_url)
    try:
        migrate(engine)
        with transaction(session_factory(engine)) as s:
            yield s
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    finally:
        engine.dispose()


def _change(db_url: str, name: str, change: Callable[[Session, UserRow], str | None]) -> None:
    """Apply ``change`` to user ``name`` in one transaction; print what it returns."""
    from controller.api.users import get_user

    with _store(db_url) as s:
        user = get_user(s, name)
        if user is None:
            click.echo(f"error: no user {name!r} (sdlab users list shows them)", err=True)
            sys.exit(EXIT_FAILED)
        said = change(s, user)
    if said:
        click.echo(said)


def _ask_password() -> str:
    return str(click.prompt("password", hide_input=True, confirmation_prompt=True))


@click.group()
def users() -> None:
    """Dashboard users and their API tokens."""


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True, help="Role.")
@click.option("--password", is_flag=True, help="Also ask for a password for the login form.")
@db_option
def users_add(name: str, role: str, password: bool, db_url: str) -> None:
    """Create user NAME and print their API token (shown this once only)."""
    from controller.api.users import add_user

    secret = _ask_password() if password else None
    with _store(db_url) as s:
        _, token = add_user(
            s, name, role, iterations=_iterations(), password=secret, actor=cli_actor()
        )
    click.echo(f"user {name} ({role}) created; API token (shown once, keep it safe):")
    click.echo(token)


@users.command("list")
@db_option
def users_list(db_url: str) -> None:
    """List users and their roles."""
    from controller.api.users import list_users

    with _store(db_url) as s:
        for u in list_users(s):
            state = "disabled" if u.disabled else "active"
            click.echo(f"{u.name}\t{u.role}\t{state}")


@users.command("role")
@click.argument("name")
@click.argument("role", type=click.Choice(ROLES))
@db_option
def users_role(name: str, role: str, db_url: str) -> None:
    """Give user NAME the role ROLE."""
    from controller.api.users import set_role

    def change(s: Session, user: UserRow) -> str:
        set_role(s, user, role, actor=cli_actor())
        return f"user {name}: role {role}"

    _change(db_url, name, change)


@users.command("disable")
@click.argument("name")
@db_option
def users_disable(name: str, db_url: str) -> None:
    """Disable user NAME: their API tokens are revoked and their sessions end."""
    from controller.api.users import disable_user

    def change(s: Session, user: UserRow) -> str:
        disable_user(s, user, actor=cli_actor())
        return f"user {name} disabled"

    _change(db_url, name, change)


@users.command("enable")
@click.argument("name")
@db_option
def users_enable(name: str, db_url: str) -> None:
    """Enable user NAME again (their old API tokens stay revoked: see `users token`)."""
    from controller.api.users import enable_user

    def change(s: Session, user: UserRow) -> str:
        enable_user(s, user, actor=cli_actor())
        return f"user {name} enabled"

    _change(db_url, name, change)


@users.command("token")
@click.argument("name")
@db_option
def users_token(name: str, db_url: str) -> None:
    """Revoke user NAME's API tokens and print a new one (shown this once only)."""
    from controller.api.users import rotate_token

    def change(s: Session, user: UserRow) -> str:
        token = rotate_token(s, user, iterations=_iterations(), actor=cli_actor())
        return f"user {name}: earlier tokens revoked; API token (shown once):\n{token}"

    _change(db_url, name, change)


@users.command("password")
@click.argument("name")
@db_option
def users_password(name: str, db_url: str) -> None:
    """Ask for a new password for user NAME (their browser sessions end)."""
    from controller.api.users import set_password

    secret = _ask_password()

    def change(s: Session, user: UserRow) -> str:
        set_password(s, user, secret, iterations=_iterations(), actor=cli_actor())
        return f"user {name}: password changed"

    _change(db_url, name, change)
