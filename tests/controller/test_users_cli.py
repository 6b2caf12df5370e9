"""``sdlab users`` (controller/users_cli.py): the dashboard's user changes from the command
line, each recorded with the CLI's actor, against a real SQLite store."""

from __future__ import annotations

import getpass
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import select

from controller.api.users import check_login, get_user, user_for_token
from controller.store import make_engine, session_factory, transaction
from controller.users_cli import users
from models.tables import EventRow

PASSWORD = "correct horse battery"


def run(db: str, *args: str, password: str | None = None) -> tuple[int, str]:
    given = f"{password}\n{password}\n" if password is not None else None
    res = CliRunner().invoke(users, [*args, "--db", db], input=given)
    return res.exit_code, res.output


def token_of(output: str) -> str:
    return output.strip().splitlines()[-1]


def test_every_change_the_users_page_makes_is_a_command(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'u.db'}"
    code, out = run(db, "add", "ada", "--role", "viewer")
    assert code == 0, out
    first = token_of(out)

    assert run(db, "role", "ada", "admin") == (0, "user ada: role admin\n")
    code, out = run(db, "token", "ada")
    assert code == 0, out
    second = token_of(out)
    assert run(db, "password", "ada", password=PASSWORD)[0] == 0
    assert run(db, "list") == (0, "ada\tadmin\tactive\n")

    engine = make_engine(db)
    factory = session_factory(engine)
    with transaction(factory) as s:
        assert user_for_token(s, first) is None  # revoked by the new token
        assert user_for_token(s, second) is not None
        assert check_login(s, "ada", PASSWORD, dummy_iterations=1) is not None

    assert run(db, "disable", "ada")[0] == 0
    with transaction(factory) as s:
        assert user_for_token(s, second) is None
        assert check_login(s, "ada", PASSWORD, dummy_iterations=1) is None
    assert run(db, "enable", "ada")[0] == 0
    with transaction(factory) as s:
        assert check_login(s, "ada", PASSWORD, dummy_iterations=1) is not None
        assert user_for_token(s, second) is None  # old tokens stay revoked
        user = get_user(s, "ada")
        assert user is not None
        assert (user.role, user.disabled) == ("admin", False)
        events = s.scalars(select(EventRow).where(EventRow.kind.like("user.%"))).all()
        assert [e.kind for e in events] == [
            "user.created",
            "user.role_changed",
            "user.token_rotated",
            "user.password_changed",
            "user.disabled",
            "user.enabled",
        ]
        assert {e.actor for e in events} == {f"cli:{getpass.getuser()}"}
    engine.dispose()


def test_an_unknown_user_or_a_broken_rule_exits_1_and_changes_nothing(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'u.db'}"
    assert run(db, "add", "ada", "--role", "operator")[0] == 0
    code, out = run(db, "role", "bob", "admin")
    assert code == 1
    assert "no user 'bob'" in out
    code, out = run(db, "password", "ada", password="ada")
    assert code == 1
    assert "password: must be at least" in out
    code, out = run(db, "role", "ada", "owner")
    assert code == 2  # click names the argument and the choices
    assert "'owner' is not one of 'viewer', 'operator', 'admin'" in out
    assert run(db, "list") == (0, "ada\toperator\tactive\n")
