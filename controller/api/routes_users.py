"""Users, managed by admins: list, create, change role, disable and re-enable, rotate a
token, set a password.

Every change is an event (``user.created``, ``user.role_changed``, ``user.disabled``,
``user.enabled``, ``user.token_rotated``, ``user.password_changed``) naming the admin. An
admin cannot disable or demote themselves, so a lab never locks its last admin out by a
slip. The Users page (``/users``) calls these same endpoints.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from controller.api.routes_campaigns import Admin, DbSession, Settings
from controller.api.users import (
    USER_NAME_PATTERN,
    Principal,
    Role,
    UserError,
    add_user,
    disable_user,
    enable_user,
    get_user,
    list_users,
    rotate_token,
    set_password,
    set_role,
)
from controller.api.views import iso
from models.tables import UserRow

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["users"])

UserName = Annotated[str, Path(max_length=64, pattern=USER_NAME_PATTERN)]

Responses = dict[int | str, dict[str, Any]]

NOT_FOUND: Responses = {404: {"description": "No such user"}}
REFUSED: Responses = {
    409: {"description": "Refused: a name taken, or an admin changing themselves"}
}
INVALID: Responses = {422: {"description": "A field breaks its rule (``detail`` names it)"}}


class NewUser(BaseModel):
    """A user to create."""

    name: str = Field(pattern=USER_NAME_PATTERN)
    role: Role
    password: str | None = Field(default=None, max_length=256)  # rules: check_password


class UserChange(BaseModel):
    """What to change about a user (fields left out stay as they are)."""

    role: Role | None = None
    disabled: bool | None = None


class PasswordBody(BaseModel):
    """A new password (the rules of ``check_password``)."""

    password: str = Field(min_length=1, max_length=256)


class UserOut(BaseModel):
    """A user as the API shows it (never a secret)."""

    name: str
    role: str
    disabled: bool
    has_password: bool
    created_at: str | None


class UserWithToken(BaseModel):
    """A user and their new API token, shown this once only."""

    name: str
    role: str
    token: str


def _out(u: UserRow) -> UserOut:
    return UserOut(
        name=u.name,
        role=u.role,
        disabled=u.disabled,
        has_password=u.password_hash is not None,
        created_at=iso(u.created_at),
    )


def _find(s: Session, name: str) -> UserRow:
    user = get_user(s, name)
    if user is None:
        raise HTTPException(404, f"no user named {name!r}")
    return user


def _not_myself(user: UserRow, who: Principal, what: str) -> None:
    if user.name == who.name:
        raise HTTPException(409, f"an admin cannot {what} themselves")


@router.get("/users", summary="List users")
def get_users(s: DbSession, _: Admin) -> list[UserOut]:
    """Every user with their role and whether they are disabled."""
    return [_out(u) for u in list_users(s)]


@router.post("/users", status_code=201, summary="Create a user", responses={**REFUSED, **INVALID})
def create_user(body: NewUser, s: DbSession, settings: Settings, who: Admin) -> UserWithToken:
    """Create a user; the answer holds their API token, which is shown this once only."""
    try:
        user, token = add_user(
            s,
            body.name,
            body.role.value,
            iterations=settings.kdf_iterations,
            password=body.password,
            actor=who.actor,
        )
    except UserError as exc:
        raise HTTPException(409 if "exists" in str(exc) else 422, str(exc)) from exc
    return UserWithToken(name=user.name, role=user.role, token=token)


@router.patch(
    "/users/{name}",
    summary="Change a user's role, disable or re-enable them",
    responses={**NOT_FOUND, **REFUSED},
)
def change_user(name: UserName, body: UserChange, s: DbSession, who: Admin) -> UserOut:
    """Change the role, or disable (tokens revoked, sessions and streams end) or re-enable
    a user."""
    user = _find(s, name)
    if body.role is not None and body.role.value != user.role:
        _not_myself(user, who, "change the role of")
        set_role(s, user, body.role.value, actor=who.actor)
    if body.disabled is True and not user.disabled:
        _not_myself(user, who, "disable")
        disable_user(s, user, actor=who.actor)
    elif body.disabled is False and user.disabled:
        enable_user(s, user, actor=who.actor)
    return _out(user)


@router.delete("/users/{name}", summary="Disable a user", responses={**NOT_FOUND, **REFUSED})
def delete_user(name: UserName, s: DbSession, who: Admin) -> UserOut:
    """Disable a user: their tokens stop working and their sessions end."""
    user = _find(s, name)
    _not_myself(user, who, "disable")
    disable_user(s, user, actor=who.actor)
    return _out(user)


@router.post("/users/{name}/token", summary="Replace a user's API token", responses=NOT_FOUND)
def new_token(name: UserName, s: DbSession, settings: Settings, who: Admin) -> UserWithToken:
    """Revoke every API token of the user and issue a new one, shown this once only."""
    user = _find(s, name)
    token = rotate_token(s, user, iterations=settings.kdf_iterations, actor=who.actor)
    return UserWithToken(name=user.name, role=user.role, token=token)


@router.post(
    "/users/{name}/password", summary="Set a user's password", responses={**NOT_FOUND, **INVALID}
)
def new_password(
    name: UserName, body: PasswordBody, s: DbSession, settings: Settings, who: Admin
) -> UserOut:
    """Set the password the user logs in with; their open browser sessions end."""
    user = _find(s, name)
    try:
        set_password(s, user, body.password, iterations=settings.kdf_iterations, actor=who.actor)
    except UserError as exc:
        raise HTTPException(422, str(exc)) from exc
    return _out(user)
