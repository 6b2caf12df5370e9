"""Simulated servers over CURVE: keys from the file's ``curve`` table or the command line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner

from controller.cli import cli
from instruments.client import InstrumentClient
from instruments.security import CurveClientKeys, CurveServerKeys, curve_available
from models.campaign_file import load_simulation
from models.errors import InstrumentTimeoutError, InvalidCampaignError
from models.instrument_spec import CurveSpec, InstrumentSpec, SimulatedInstrumentSpec
from sim.drivers import make_driver
from sim.faults import FaultyServer
from sim.serve import main, serve_instruments

LOOPBACK = "tcp://127.0.0.1:*"

pytestmark = pytest.mark.skipif(not curve_available(), reason="libzmq built without CURVE")


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    runner = CliRunner()
    for name in ("station", "controller"):
        result = runner.invoke(cli, ["keys", "generate", str(tmp_path), name])
        assert result.exit_code == 0, result.output
        assert f"{name}.key_secret" in result.output
    again = runner.invoke(cli, ["keys", "generate", str(tmp_path), "station"])
    assert again.exit_code == 1
    assert "exists" in again.output
    (tmp_path / "allowed").mkdir()
    (tmp_path / "allowed" / "controller.key").write_bytes(
        (tmp_path / "controller.key").read_bytes()
    )
    return tmp_path


def station(keys: Path, address: str | None = None, **curve: Path) -> InstrumentSpec:
    return InstrumentSpec(
        name="station",
        kind="objective",
        address=address,
        simulated=SimulatedInstrumentSpec(world="branin"),
        curve=CurveSpec(**curve) if curve else None,
    )


def test_a_simulated_server_uses_the_server_keys_of_its_entry(keys: Path) -> None:
    spec = station(
        keys,
        "tcp://0.0.0.0:*",  # a wildcard bind is allowed because the link is encrypted
        server_secret_key=keys / "station.key_secret",
        allowed_clients=keys / "allowed",
    )
    good = CurveClientKeys.load(keys / "controller.key_secret", keys / "station.key")

    async def go() -> None:
        async with await serve_instruments([spec]) as running:
            port = running.endpoints["station"].rsplit(":", 1)[1]
            address = f"tcp://127.0.0.1:{port}"
            async with InstrumentClient(address, timeout_s=2, curve=good) as client:
                assert (await client.describe()).name == "station"
            async with InstrumentClient(address, timeout_s=0.5) as plain:
                with pytest.raises(InstrumentTimeoutError):
                    await plain.describe()

    asyncio.run(go())


def test_the_command_line_keys_serve_entries_without_their_own(keys: Path) -> None:
    curve = CurveServerKeys.load(keys / "station.key_secret", keys / "allowed")
    good = CurveClientKeys.load(keys / "controller.key_secret", keys / "station.key")

    async def go() -> None:
        async with await serve_instruments([station(keys)], curve=curve) as running:
            endpoint = running.endpoints["station"]
            async with InstrumentClient(endpoint, timeout_s=2, curve=good) as client:
                assert (await client.describe()).name == "station"

    asyncio.run(go())


def test_a_plaintext_wildcard_bind_is_refused_naming_the_key(keys: Path) -> None:
    # the spec itself refuses a non-loopback address without keys; build it unchecked
    spec = station(keys).model_copy(update={"address": "tcp://0.0.0.0:*"})
    with pytest.raises(InvalidCampaignError) as info:
        asyncio.run(serve_instruments([spec], source="sim.toml"))
    assert info.value.problems[0].key == "instruments[0].curve.server_secret_key"
    assert "station" in info.value.problems[0].message


def test_main_refuses_half_a_curve_configuration(
    keys: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "sim.toml"
    path.write_text(
        '[[instruments]]\nname = "s"\nkind = "k"\n[instruments.simulated]\nworld = "branin"\n'
    )
    assert main([str(path), "--curve-secret-key", str(keys / "station.key_secret")]) == 2
    assert "--curve-allow" in capsys.readouterr().err
    bad = [str(path), "--curve-secret-key", str(keys / "station.key"), "--curve-allow", "x"]
    assert main(bad) == 2
    assert "no secret key" in capsys.readouterr().err


def test_relative_key_paths_in_a_file_are_relative_to_the_file(
    keys: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = keys / "sim.toml"
    path.write_text(
        '[[instruments]]\nname = "station"\nkind = "k"\n'
        'curve.server_secret_key = "station.key_secret"\ncurve.allowed_clients = "allowed"\n'
        '[instruments.simulated]\nworld = "branin"\n'
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = load_simulation(path).instruments[0]
    assert spec.curve is not None
    assert spec.curve.server_secret_key == keys / "station.key_secret"
    good = CurveClientKeys.load(keys / "controller.key_secret", keys / "station.key")

    async def go() -> None:
        async with await serve_instruments([spec]) as running:
            endpoint = running.endpoints["station"]
            async with InstrumentClient(endpoint, timeout_s=2, curve=good) as client:
                assert (await client.describe()).name == "station"

    asyncio.run(go())


def test_a_server_that_drops_off_the_network_comes_back_encrypted(keys: Path) -> None:
    curve = CurveServerKeys.load(keys / "station.key_secret", keys / "allowed")
    good = CurveClientKeys.load(keys / "controller.key_secret", keys / "station.key")
    spec = station(keys)
    assert spec.simulated is not None

    async def go() -> None:
        server = FaultyServer(make_driver("station", spec.simulated), LOOPBACK, curve=curve)
        endpoint = await server.start()
        try:
            server.drop_for(0.1)
            async with InstrumentClient(endpoint, timeout_s=5, curve=good) as client:
                await asyncio.sleep(0.05)  # off the network now
                assert (await client.describe()).name == "station"  # answered once back
            async with InstrumentClient(endpoint, timeout_s=0.5) as plain:
                with pytest.raises(InstrumentTimeoutError):
                    await plain.describe()
        finally:
            await server.stop()

    asyncio.run(go())
