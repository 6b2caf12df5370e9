"""CURVE-encrypted, authenticated links (instruments/security.py) and the plaintext policy."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from instruments.client import InstrumentClient
from instruments.security import (
    CurveClientKeys,
    CurveServerKeys,
    _start_authenticator,
    curve_available,
    generate_keys,
)
from instruments.server import InstrumentServer
from models.campaign import CampaignSpec
from models.errors import InstrumentTimeoutError, InvalidCampaignError, LinkSecurityError
from models.instrument_spec import InstrumentSpec, is_loopback_address
from tests.instruments.test_server_client import LOOPBACK, AdderDriver

pytestmark = pytest.mark.skipif(not curve_available(), reason="libzmq built without CURVE")


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """server.key(_secret), controller.key(_secret), stranger.key(_secret) and allowed/."""
    generate_keys(tmp_path, "server")
    generate_keys(tmp_path, "controller")
    generate_keys(tmp_path, "stranger")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "controller.key").write_bytes((tmp_path / "controller.key").read_bytes())
    return tmp_path


def client_keys(d: Path, who: str = "controller", server: str = "server") -> CurveClientKeys:
    return CurveClientKeys.load(d / f"{who}.key_secret", d / f"{server}.key")


def server_keys(d: Path) -> CurveServerKeys:
    return CurveServerKeys.load(d / "server.key_secret", d / "allowed")


async def describe_name(
    endpoint: str, curve: CurveClientKeys | None, timeout_s: float = 10.0
) -> str:
    """The server's name; a refused handshake never answers, so a test expecting that
    passes a short ``timeout_s`` (an admitted client gets a long one: on a loaded machine
    the CURVE handshake alone can take longer than half a second)."""
    async with InstrumentClient(endpoint, timeout_s=timeout_s, curve=curve) as client:
        return (await client.describe()).name


def test_generate_keys_writes_a_pair_and_never_overwrites(tmp_path: Path) -> None:
    public, secret = generate_keys(tmp_path / "k", "lab")
    assert (public.name, secret.name) == ("lab.key", "lab.key_secret")
    assert secret.stat().st_mode & 0o077 == 0
    with pytest.raises(FileExistsError):
        generate_keys(tmp_path / "k", "lab")


def test_only_clients_with_allowed_keys_and_the_right_server_key_get_answers(keys: Path) -> None:
    async def go() -> None:
        server = InstrumentServer(AdderDriver("secure"), LOOPBACK, curve=server_keys(keys))
        endpoint = await server.start()
        try:
            assert await describe_name(endpoint, client_keys(keys)) == "secure"
            for curve in (
                None,  # plaintext to a CURVE server: the handshake never completes
                client_keys(keys, who="stranger"),  # not in the allowed directory
                client_keys(keys, server="stranger"),  # expects another server
            ):
                with pytest.raises(InstrumentTimeoutError):
                    await describe_name(endpoint, curve, timeout_s=0.5)
            # the refused clients did not disturb the server
            assert await describe_name(endpoint, client_keys(keys)) == "secure"
        finally:
            await server.stop()

    asyncio.run(go())


def test_servers_in_one_process_keep_separate_allowed_lists(keys: Path) -> None:
    other = keys / "allowed-other"
    other.mkdir()
    (other / "stranger.key").write_bytes((keys / "stranger.key").read_bytes())

    async def go() -> None:
        a = InstrumentServer(AdderDriver("a"), LOOPBACK, curve=server_keys(keys))
        b = InstrumentServer(
            AdderDriver("b"),
            LOOPBACK,
            curve=CurveServerKeys.load(keys / "server.key_secret", other),
        )
        ea, eb = await a.start(), await b.start()
        try:
            assert await describe_name(ea, client_keys(keys)) == "a"
            assert await describe_name(eb, client_keys(keys, who="stranger")) == "b"
            with pytest.raises(InstrumentTimeoutError):
                await describe_name(eb, client_keys(keys), timeout_s=0.5)
            await a.stop()  # the shared ZAP handler keeps serving b
            assert await describe_name(eb, client_keys(keys, who="stranger")) == "b"
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(go())


class Tap:
    """A TCP relay that records every byte a client sends to a server."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.sent = bytearray()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, record: bool) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await r.read(65536):
                if record:
                    self.sent.extend(data)
                w.write(data)
                await w.drain()
        w.close()

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        sr, sw = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(self._pipe(cr, sw, True), self._pipe(sr, cw, False))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Tap]:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            self._server.close()


@pytest.mark.parametrize("encrypted", [True, False])
def test_bytes_on_the_wire_are_unreadable_with_curve(keys: Path, encrypted: bool) -> None:
    async def go() -> bytes:
        curve = server_keys(keys) if encrypted else None
        server = InstrumentServer(AdderDriver("wire"), LOOPBACK, curve=curve)
        endpoint = await server.start()
        try:
            async with Tap(int(endpoint.rsplit(":", 1)[1])).running() as tap:
                ckeys = client_keys(keys) if encrypted else None
                async with InstrumentClient(
                    f"tcp://127.0.0.1:{tap.port}", timeout_s=2, curve=ckeys
                ) as client:
                    await client.submit("secret-request-42", "add", {"a": 1, "b": 2}, wait_s=1)
                return bytes(tap.sent)
        finally:
            await server.stop()

    sent = asyncio.run(go())
    assert sent  # the relay saw the traffic
    visible = b"secret-request-42" in sent or b"sdlab/1" in sent
    assert visible is not encrypted


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("tcp://127.0.0.1:5601", True),
        ("tcp://127.9.0.1:5601", True),
        ("tcp://localhost:5601", True),
        ("tcp://[::1]:5601", True),
        ("ipc:///tmp/x.sock", True),
        ("inproc://x", True),
        ("tcp://eth0;127.0.0.1:5601", True),
        ("tcp://*:5601", False),
        ("tcp://0.0.0.0:5601", False),
        ("tcp://192.168.1.20:5601", False),
        ("tcp://lab-pc-3:5601", False),
        ("tcp://[fe80::1]:5601", False),
        ("pgm://239.192.1.1:5555", False),
        ("nonsense", False),
    ],
)
def test_loopback_addresses(address: str, loopback: bool) -> None:
    assert is_loopback_address(address) is loopback


def test_plaintext_to_a_remote_address_is_refused_unless_insecure(keys: Path) -> None:
    with pytest.raises(LinkSecurityError) as info:
        InstrumentClient("tcp://192.168.1.20:5601", name="xrd-1")
    assert info.value.instrument == "xrd-1"
    assert info.value.key == "curve.server_public_key"
    assert "xrd-1" in str(info.value)
    InstrumentClient("tcp://192.168.1.20:5601", insecure=True)
    InstrumentClient("tcp://192.168.1.20:5601", curve=client_keys(keys))
    InstrumentClient("tcp://127.0.0.1:5601")

    async def bind(**kwargs: object) -> None:
        server = InstrumentServer(AdderDriver("open"), "tcp://0.0.0.0:*", **kwargs)  # type: ignore[arg-type]
        await server.start()
        await server.stop()

    with pytest.raises(LinkSecurityError, match=r"curve\.server_secret_key"):
        asyncio.run(bind())
    asyncio.run(bind(insecure=True))
    asyncio.run(bind(curve=server_keys(keys)))


def test_bad_key_files_name_the_key(tmp_path: Path, keys: Path) -> None:
    with pytest.raises(LinkSecurityError) as info:
        CurveClientKeys.load(keys / "controller.key", keys / "server.key")
    assert info.value.key == "curve.client_keys"  # a public file holds no secret key
    with pytest.raises(LinkSecurityError) as info:
        CurveClientKeys.load(keys / "controller.key_secret", tmp_path / "missing.key")
    assert info.value.key == "curve.server_public_key"
    with pytest.raises(LinkSecurityError) as info:
        CurveServerKeys.load(keys / "server.key_secret", tmp_path / "nowhere")
    assert info.value.key == "curve.allowed_clients"


def campaign(instrument: dict[str, object]) -> dict[str, object]:
    return {
        "campaign": {"name": "c"},
        "parameters": [{"name": "x", "type": "continuous", "lower": 0, "upper": 1}],
        "objectives": [{"name": "y", "direction": "maximize"}],
        "workflow": [{"kind": "k", "action": "measure"}],
        "instruments": [{"name": "remote-1", "kind": "k", **instrument}],
        "planner": {"name": "random"},
        "budget": {"max_experiments": 1},
    }


def test_campaign_entries_for_remote_instruments_need_keys_or_insecure(keys: Path) -> None:
    remote = {"address": "tcp://192.168.1.20:5601"}
    with pytest.raises(ValueError, match=r"remote-1.*curve\.server_public_key"):
        InstrumentSpec.model_validate({"name": "remote-1", "kind": "k", **remote})
    from models.campaign_file import parse_spec

    with pytest.raises(InvalidCampaignError) as info:
        parse_spec(campaign(remote), CampaignSpec, "c.toml")
    assert info.value.problems[0].key == "instruments[0]"
    assert "remote-1" in info.value.problems[0].message
    ok = parse_spec(campaign({**remote, "insecure": True}), CampaignSpec)
    assert ok.instruments[0].insecure
    curve = {
        "server_public_key": str(keys / "server.key"),
        "client_keys": str(keys / "controller.key_secret"),
    }
    spec = parse_spec(campaign({**remote, "curve": curve}), CampaignSpec)
    loaded = CurveClientKeys.for_instrument(spec.instruments[0])
    assert loaded == client_keys(keys)
    with pytest.raises(InvalidCampaignError) as info:
        parse_spec(
            campaign({**remote, "curve": {"server_public_key": curve["server_public_key"]}}),
            CampaignSpec,
        )
    assert info.value.problems[0].key == "instruments[0].curve"
    assert "client_keys" in info.value.problems[0].message


def test_a_zap_handler_waits_for_the_endpoint_a_stopped_one_still_holds() -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        lingering = ctx.socket(zmq.REP)  # as the previous handler's socket, not yet closed
        lingering.bind("inproc://zeromq.zap.01")
        threading.Timer(0.2, lingering.close, kwargs={"linger": 0}).start()
        auth = _start_authenticator(int(ctx.underlying))
        try:
            assert auth.is_alive()
        finally:
            auth.stop()
    finally:
        ctx.term()
