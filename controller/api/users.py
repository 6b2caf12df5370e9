"""Users, API tokens and browser sessions in the store, with their secrets hashed.

Passwords and API tokens are hashed with PBKDF2-HMAC-SHA256 from the standard library
(``pbkdf2_sha256$<iterations>$<salt>$<hash>``, salt and hash in URL-safe base64), and
compared in constant time. A token reads ``sdlab_<prefix>_<secret>``: the prefix finds the
row, the whole token is checked against the hash. Session cookies are 256 random bits, so
the store keeps their SHA-256 only. Like the store's own functions, everything here receives
a session and never opens one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.store import add_event
from models.errors import SdlabError
from models.tables import ApiTokenRow, UserRow, WebSessionRow, utcnow

logger = logging.getLogger(__name__)

USER_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
"""User names: a letter, then letters, digits, ``_``, ``.`` or ``-`` (64 at most)."""

TOKEN_USE_RESOLUTION = timedelta(minutes=5)
"""``last_used_at`` of a token is updated at most this often."""

_TOKEN = re.compile(r"^sdlab_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})$")


class Role(StrEnum):
    """What a user may do; each role may do everything the ones before it may."""

    VIEWER = "viewer"  # read everything
    OPERATOR = "operator"  # also pause, resume, approve, take instruments out of service
    ADMIN = "admin"  # also create, start and abort campaigns, and manage users

    @property
    def rank(self) -> int:
        """Position in the order viewer < operator < admin."""
        return list(Role).index(self)

    def allows(self, needed: Role) -> bool:
        """Whether this role may do what ``needed`` may."""
        return self.rank >= needed.rank


class UserError(SdlabError, ValueError):
    """A user cannot be created or changed as asked.

    Attributes:
        field: The offending field (``"name"``, ``"role"``).
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class Principal:
    """Who sent a request, and how they proved it.

    Attributes:
        name: The user name.
        role: The user's role.
        via: ``"token"`` (an ``Authorization: Bearer`` header) or ``"session"`` (the cookie).
        csrf_token: The session's CSRF token (``None`` for tokens, which need none).
    """

    name: str
    role: Role
    via: str
    csrf_token: str | None = None

    @property
    def actor(self) -> str:
        """How the event log names this user."""
        return f"user:{self.name}"


# --------------------------------------------------------------------------- hashing


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_secret(secret: str, iterations: int) -> str:
    """A salted PBKDF2-HMAC-SHA256 hash of ``secret`` that records its own parameters."""
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${_b64(salt)}${_b64(digest)}"


def verify_secret(secret: str, stored: str) -> bool:
    """Whether ``secret`` matches a hash from :func:`hash_secret` (constant-time compare)."""
    try:
        scheme, iterations, salt, digest = stored.split("$")
        if scheme != "pbkdf2_sha256":
            return False
        expected = _unb64(digest)
        got = hashlib.pbkdf2_hmac("sha256", secret.encode(), _unb64(salt), int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(got, expected)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- users


def get_user(s: Session, name: str) -> UserRow | None:
    """The user called ``name``, if any."""
    return s.scalars(select(UserRow).where(UserRow.name == name)).one_or_none()


def list_users(s: Session) -> list[UserRow]:
    """Every user, by name."""
    return list(s.scalars(select(UserRow).order_by(UserRow.name)))


PASSWORD_MIN = 10
"""Shortest password accepted, in characters."""
PASSWORD_MAX = 256
"""Longest password accepted, in characters."""


def check_password(password: str, name: str | None = None) -> None:
    """Apply the password rules (the CLI and the API both call this).

    Raises:
        UserError: ``password``: shorter than :data:`PASSWORD_MIN` or longer than
            :data:`PASSWORD_MAX` characters, one character repeated, or the user's name.
    """
    if len(password) < PASSWORD_MIN:
        raise UserError("password", f"must be at least {PASSWORD_MIN} characters long")
    if len(password) > PASSWORD_MAX:
        raise UserError("password", f"must be at most {PASSWORD_MAX} characters long")
    if len(set(password)) == 1:
        raise UserError("password", "must not be one character repeated")
    if name is not None and password.lower() == name.lower():
        raise UserError("password", "must not be the user name")


def add_user(
    s: Session,
    name: str,
    role: str,
    *,
    iterations: int,
    password: str | None = None,
    actor: str = "cli",
) -> tuple[UserRow, str]:
    """Create a user with a first API token.

    Args:
        s: The session.
        name: The user name (see :data:`USER_NAME_PATTERN`).
        role: ``viewer``, ``operator`` or ``admin``.
        iterations: PBKDF2 iterations for the hashes.
        password: A password for the login form (the token works there too).
        actor: Who created the user, for the event log.

    Returns:
        The new user and its API token, which is not stored and cannot be shown again.

    Raises:
        UserError: If the name is malformed or taken, or the role unknown.
    """
    if not re.match(USER_NAME_PATTERN, name):
        raise UserError("name", f"{name!r} is not a valid user name")
    try:
        parsed = Role(role)
    except ValueError as exc:
        raise UserError("role", f"expected one of {', '.join(Role)}, got {role!r}") from exc
    if password is not None:
        check_password(password, name)
    if get_user(s, name) is not None:
        raise UserError("name", f"a user named {name!r} exists already")
    user = UserRow(
        name=name,
        role=parsed.value,
        password_hash=hash_secret(password, iterations) if password else None,
        disabled=False,
    )
    s.add(user)
    s.flush()
    token = issue_token(s, user, iterations=iterations)
    add_event(s, "user.created", f"user {name} created with role {parsed.value}", actor=actor)
    return user, token


def disable_user(s: Session, user: UserRow, *, actor: str) -> None:
    """Disable a user: their tokens are revoked and their sessions closed."""
    user.disabled = True
    for tok in s.scalars(select(ApiTokenRow).where(ApiTokenRow.user_id == user.id)):
        tok.revoked = True
    for sess in s.scalars(select(WebSessionRow).where(WebSessionRow.user_id == user.id)):
        s.delete(sess)
    add_event(s, "user.disabled", f"user {user.name} disabled", actor=actor)


def enable_user(s: Session, user: UserRow, *, actor: str) -> None:
    """Re-enable a disabled user; their old tokens stay revoked (rotate one to log in by
    token again), their password works again."""
    user.disabled = False
    add_event(s, "user.enabled", f"user {user.name} enabled", actor=actor)


def set_role(s: Session, user: UserRow, role: str, *, actor: str) -> None:
    """Give ``user`` another role.

    Raises:
        UserError: ``role``: not one of the roles.
    """
    try:
        parsed = Role(role)
    except ValueError as exc:
        raise UserError("role", f"expected one of {', '.join(Role)}, got {role!r}") from exc
    old = user.role
    user.role = parsed.value
    add_event(
        s, "user.role_changed", f"user {user.name}: role {old} -> {parsed.value}", actor=actor
    )


def rotate_token(s: Session, user: UserRow, *, iterations: int, actor: str) -> str:
    """Revoke every API token of ``user`` and issue a new one (returned once)."""
    for tok in s.scalars(select(ApiTokenRow).where(ApiTokenRow.user_id == user.id)):
        tok.revoked = True
    token = issue_token(s, user, iterations=iterations)
    add_event(s, "user.token_rotated", f"user {user.name}: API token replaced", actor=actor)
    return token


def set_password(s: Session, user: UserRow, password: str, *, iterations: int, actor: str) -> None:
    """Set the password of ``user`` (the rules of :func:`check_password`); their browser
    sessions end, so a stolen session does not outlive the change.

    Raises:
        UserError: ``password``: it breaks a rule.
    """
    check_password(password, user.name)
    user.password_hash = hash_secret(password, iterations)
    for sess in s.scalars(select(WebSessionRow).where(WebSessionRow.user_id == user.id)):
        s.delete(sess)
    add_event(s, "user.password_changed", f"user {user.name}: password changed", actor=actor)


def issue_token(s: Session, user: UserRow, *, iterations: int) -> str:
    """A new API token for ``user`` (returned once; only its hash is kept)."""
    prefix = secrets.token_hex(6)
    token = f"sdlab_{prefix}_{secrets.token_urlsafe(32)}"
    s.add(
        ApiTokenRow(
            user_id=user.id,
            prefix=prefix,
            token_hash=hash_secret(token, iterations),
            revoked=False,
        )
    )
    s.flush()
    return token


def _valid_token_row(s: Session, token: str) -> ApiTokenRow | None:
    m = _TOKEN.match(token)
    if m is None:
        return None
    row = s.scalars(select(ApiTokenRow).where(ApiTokenRow.prefix == m.group(1))).one_or_none()
    if row is None or row.revoked or not verify_secret(token, row.token_hash):
        return None
    return row


def user_for_token(s: Session, token: str) -> UserRow | None:
    """The enabled user an API token belongs to, or ``None`` if it is not a valid token.

    Only reads: recording the use is :func:`note_token_use`'s job, in a transaction of its
    own, so that a busy database never fails the read that carried the token.
    """
    row = _valid_token_row(s, token)
    if row is None:
        return None
    user = s.get(UserRow, row.user_id)
    if user is None or user.disabled:
        return None
    return user


def token_use_due(s: Session, token: str) -> bool:
    """Whether the token's ``last_used_at`` is older than :data:`TOKEN_USE_RESOLUTION`."""
    m = _TOKEN.match(token)
    if m is None:
        return False
    last = s.scalar(select(ApiTokenRow.last_used_at).where(ApiTokenRow.prefix == m.group(1)))
    return last is None or utcnow() - last > TOKEN_USE_RESOLUTION


def note_token_use(s: Session, token: str) -> None:
    """Set the token's ``last_used_at`` to now (at most every :data:`TOKEN_USE_RESOLUTION`)."""
    row = _valid_token_row(s, token)
    now = utcnow()
    if row is not None and (
        row.last_used_at is None or now - row.last_used_at > TOKEN_USE_RESOLUTION
    ):
        row.last_used_at = now


_DUMMY_HASHES: dict[int, str] = {}


def _dummy_hash(iterations: int) -> str:
    if iterations not in _DUMMY_HASHES:
        _DUMMY_HASHES[iterations] = hash_secret(secrets.token_urlsafe(16), iterations)
    return _DUMMY_HASHES[iterations]


def check_login(
    s: Session, name: str, secret: str, *, dummy_iterations: int = 200_000
) -> UserRow | None:
    """The user if ``secret`` is their password or one of their API tokens.

    Args:
        s: The session.
        name: The user name typed.
        secret: The password or API token typed.
        dummy_iterations: PBKDF2 iterations of the hash checked for an unknown or disabled
            name: the same as real hashes (the server's ``kdf_iterations``), so that the
            answer takes as long and does not tell which names exist.
    """
    user = get_user(s, name)
    if user is None or user.disabled:
        verify_secret(secret, _dummy_hash(dummy_iterations))
        return None
    if user.password_hash is not None and verify_secret(secret, user.password_hash):
        return user
    by_token = user_for_token(s, secret)
    return user if by_token is not None and by_token.id == user.id else None


# --------------------------------------------------------------------------- sessions


def open_session(s: Session, user: UserRow, ttl_s: float) -> tuple[str, str]:
    """Open a browser session.

    Returns:
        ``(cookie value, CSRF token)``.
    """
    purge_sessions(s)
    cookie = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(24)
    now = utcnow()
    s.add(
        WebSessionRow(
            user_id=user.id,
            token_hash=_sha256(cookie),
            csrf_token=csrf,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_s),
        )
    )
    s.flush()
    return cookie, csrf


def principal_for_session(s: Session, cookie: str) -> Principal | None:
    """Who owns the session cookie ``cookie`` (``None`` if unknown or expired)."""
    row = s.scalars(
        select(WebSessionRow).where(WebSessionRow.token_hash == _sha256(cookie))
    ).one_or_none()
    if row is None or row.expires_at <= utcnow():
        return None  # expired rows are removed by purge_sessions, never on a read
    user = s.get(UserRow, row.user_id)
    if user is None or user.disabled:
        return None
    return Principal(user.name, Role(user.role), "session", row.csrf_token)


def purge_sessions(s: Session) -> int:
    """Delete expired browser sessions; returns how many."""
    expired = list(s.scalars(select(WebSessionRow).where(WebSessionRow.expires_at <= utcnow())))
    for row in expired:
        s.delete(row)
    return len(expired)


def close_session(s: Session, cookie: str) -> None:
    """Forget the session of ``cookie`` (nothing happens if there is none)."""
    row = s.scalars(
        select(WebSessionRow).where(WebSessionRow.token_hash == _sha256(cookie))
    ).one_or_none()
    if row is not None:
        s.delete(row)
