"""CURVE authentication and encryption of ``sdlab/1`` links.

ZeroMQ's CURVE mechanism (RFC 26, CurveZMQ; Bernstein's Curve25519 key exchange) encrypts
every frame and authenticates both ends: the client must know the server's public key, and
the server accepts only clients whose public keys lie in its directory of allowed keys
(checked by a ZAP handler, RFC 27). Keys are the certificate files pyzmq's
:func:`zmq.auth.create_certificates` writes: ``NAME.key`` (public) and ``NAME.key_secret``
(public and secret); ``sdlab keys generate DIR NAME`` makes a pair.

Policy ("on by default for non-loopback addresses"): a ``tcp://`` address whose host is not a
loopback address must have keys, unless the configuration says ``insecure = true``.
Loopback, ``ipc://`` and ``inproc://`` links stay plaintext unless keys are given.

One ZAP handler serves every CURVE server of a ZeroMQ context (libzmq allows one per
context); each server gets its own ZAP domain and therefore its own list of allowed clients.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from models.errors import LinkSecurityError
from models.instrument_spec import CurveSpec, InstrumentSpec, is_loopback_address

logger = logging.getLogger(__name__)

__all__ = [
    "CurveClientKeys",
    "CurveServerKeys",
    "check_link_policy",
    "curve_available",
    "generate_keys",
    "is_loopback_address",
]


def curve_available() -> bool:
    """Whether the libzmq in use was built with CURVE (libsodium or its bundled tweetnacl)."""
    return bool(zmq.has("curve"))


def generate_keys(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Write a new CURVE key pair ``DIR/NAME.key`` (public) and ``DIR/NAME.key_secret``.

    The secret file is made readable by its owner only.

    Args:
        directory: Where to write (created if missing).
        name: Base name of the two files (e.g. the instrument's or the controller's name).

    Returns:
        ``(public_file, secret_file)``.

    Raises:
        FileExistsError: If either file exists already (keys are never overwritten).
        ValueError: If ``name`` is not a plain file name.
    """
    if not name or Path(name).name != name or name.startswith("."):
        raise ValueError(f"key name {name!r} must be a plain file name")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    public, secret = d / f"{name}.key", d / f"{name}.key_secret"
    for p in (public, secret):
        if p.exists():
            raise FileExistsError(f"{p} exists; remove it first to make a new key pair")
    pub, sec = zmq.auth.create_certificates(d, name)
    os.chmod(sec, 0o600)
    return Path(pub), Path(sec)


def _load(path: Path, instrument: str, key: str, *, secret: bool) -> tuple[bytes, bytes | None]:
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise LinkSecurityError(
            instrument, f"cannot read CURVE key file {str(path)!r}: {exc}", key
        ) from exc
    if secret and secret_key is None:
        raise LinkSecurityError(
            instrument, f"{str(path)!r} holds no secret key (use the .key_secret file)", key
        )
    return public, secret_key


@dataclass(frozen=True)
class CurveClientKeys:
    """A client's CURVE key pair and the public key of the server it talks to (Z85 bytes).

    Attributes:
        public_key: The client's public key.
        secret_key: The client's secret key.
        server_key: The server's public key.
    """

    public_key: bytes
    secret_key: bytes = field(repr=False)
    server_key: bytes

    @classmethod
    def load(
        cls, client_keys: str | Path, server_public_key: str | Path, instrument: str = "?"
    ) -> CurveClientKeys:
        """Read the client's ``.key_secret`` file and the server's ``.key`` file.

        Raises:
            LinkSecurityError: Naming the key (``curve.client_keys``,
                ``curve.server_public_key``) whose file cannot be used.
        """
        public, secret = _load(Path(client_keys), instrument, "curve.client_keys", secret=True)
        server, _ = _load(
            Path(server_public_key), instrument, "curve.server_public_key", secret=False
        )
        assert secret is not None
        return cls(public, secret, server)

    @classmethod
    def for_instrument(cls, spec: InstrumentSpec) -> CurveClientKeys | None:
        """The keys a controller uses to reach the instrument of a campaign entry, if any.

        Raises:
            LinkSecurityError: If a configured key file cannot be used.
        """
        curve = spec.curve
        if curve is None or curve.client_keys is None or curve.server_public_key is None:
            return None
        return cls.load(curve.client_keys, curve.server_public_key, spec.name)

    def apply(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` a CURVE client (call before ``connect``)."""
        sock.curve_secretkey = self.secret_key
        sock.curve_publickey = self.public_key
        sock.curve_serverkey = self.server_key


@dataclass(frozen=True)
class CurveServerKeys:
    """A server's CURVE key pair and the directory of public keys of the clients it admits.

    Attributes:
        public_key: The server's public key (Z85).
        secret_key: The server's secret key (Z85).
        allowed_clients: Directory of ``*.key`` files; only these clients are answered.
    """

    public_key: bytes
    secret_key: bytes = field(repr=False)
    allowed_clients: Path

    @classmethod
    def load(
        cls, secret_key_file: str | Path, allowed_clients: str | Path, instrument: str = "?"
    ) -> CurveServerKeys:
        """Read the server's ``.key_secret`` file and check the allowed-clients directory.

        Raises:
            LinkSecurityError: Naming ``curve.server_secret_key`` or
                ``curve.allowed_clients``.
        """
        public, secret = _load(
            Path(secret_key_file), instrument, "curve.server_secret_key", secret=True
        )
        allowed = Path(allowed_clients)
        if not allowed.is_dir():
            raise LinkSecurityError(
                instrument,
                f"allowed-clients directory {str(allowed)!r} does not exist",
                "curve.allowed_clients",
            )
        assert secret is not None
        return cls(public, secret, allowed)

    @classmethod
    def from_spec(cls, curve: CurveSpec | None, instrument: str) -> CurveServerKeys | None:
        """The server keys of a ``curve`` table, if it declares them.

        Raises:
            LinkSecurityError: If a configured key file or directory cannot be used.
        """
        if curve is None or curve.server_secret_key is None or curve.allowed_clients is None:
            return None
        return cls.load(curve.server_secret_key, curve.allowed_clients, instrument)

    def apply(
        self, sock: zmq.Socket[Any], registration: ZapRegistration | None = None
    ) -> ZapRegistration:
        """Make ``sock`` a CURVE server admitting the allowed clients (call before ``bind``).

        Args:
            sock: The server's socket.
            registration: The ZAP domain of an earlier socket of the same server, to reuse
                (a server that binds again); ``None`` registers a new one.

        Returns:
            The registration to :meth:`~ZapRegistration.release` when the server stops.
        """
        sock.curve_secretkey = self.secret_key
        sock.curve_publickey = self.public_key
        sock.curve_server = True
        if registration is None or registration.released:
            registration = _ZAP.register(sock.context, self.allowed_clients)
        sock.zap_domain = registration.domain.encode()
        return registration


def check_link_policy(
    address: str,
    *,
    keys_given: bool,
    insecure: bool,
    instrument: str,
    key: str,
) -> None:
    """Refuse a plaintext link to or from a non-loopback address.

    Args:
        address: The endpoint to connect to or bind.
        keys_given: Whether CURVE keys are configured for it.
        insecure: Whether the configuration explicitly allows plaintext.
        instrument: Instrument name, for the message.
        key: The key to set, for the message (``"curve.server_public_key"``).

    Raises:
        LinkSecurityError: If the address is not loopback, no keys are given and plaintext
            was not explicitly allowed.
    """
    if keys_given:
        if not curve_available():
            raise LinkSecurityError(
                instrument, "CURVE keys are configured but libzmq lacks CURVE support", key
            )
        return
    if insecure or is_loopback_address(address):
        return
    raise LinkSecurityError(
        instrument,
        f"{address!r} is not a loopback address and no CURVE keys are configured; set the "
        "keys, or insecure = true to allow plaintext",
        key,
        address,
    )


# --------------------------------------------------------------------------- ZAP handler


@dataclass
class ZapRegistration:
    """One server's ZAP domain; :meth:`release` it when the server's socket closes."""

    context_key: int
    domain: str
    released: bool = False

    def release(self) -> None:
        """Forget the domain; the context's ZAP handler stops with its last domain."""
        if not self.released:
            self.released = True
            _ZAP.unregister(self)


class _ZapHandlers:
    """One :class:`ThreadAuthenticator` per ZeroMQ context, shared by that context's servers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._auth: dict[int, tuple[ThreadAuthenticator, set[str]]] = {}
        self._ids = itertools.count(1)

    def register(self, context: zmq.Context[Any], allowed: Path) -> ZapRegistration:
        key = int(context.underlying)
        domain = f"sdlab-{os.getpid()}-{next(self._ids)}"
        with self._lock:
            entry = self._auth.get(key)
            if entry is None:
                entry = (_start_authenticator(key), set())
                self._auth[key] = entry
            auth, domains = entry
            # load_certificates, not configure_curve: the latter only logs a bad directory.
            certs = zmq.auth.load_certificates(allowed)
            auth.certs[domain] = certs
            domains.add(domain)
        logger.debug("CURVE domain %s admits the %d keys in %s", domain, len(certs), allowed)
        return ZapRegistration(key, domain)

    def unregister(self, registration: ZapRegistration) -> None:
        with self._lock:
            entry = self._auth.get(registration.context_key)
            if entry is None:
                return
            auth, domains = entry
            domains.discard(registration.domain)
            auth.certs.pop(registration.domain, None)
            if domains:
                return
            del self._auth[registration.context_key]
        auth.stop()


def _start_authenticator(context_key: int, wait_s: float = 5.0) -> ThreadAuthenticator:
    """Start a ZAP handler on the context, waiting for a stopped one's endpoint to be freed.

    ZeroMQ closes a socket asynchronously: right after the last server of a context stopped
    its handler, ``inproc://zeromq.zap.01`` can still be bound for a moment, and a server
    started then would fail with "Address already in use".
    """
    deadline = time.monotonic() + wait_s
    while True:
        auth = ThreadAuthenticator(zmq.Context.shadow(context_key), log=logger)
        try:
            auth.start()
            return auth
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EADDRINUSE or time.monotonic() >= deadline:
                raise
            if auth.zap_socket is not None:
                auth.zap_socket.close(linger=0)
            time.sleep(0.02)


_ZAP = _ZapHandlers()
