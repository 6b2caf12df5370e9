"""The gateway: one process hosting several drivers, each on its own ZeroMQ endpoint.

A lab PC runs ``sdlab instruments serve LAB.toml`` (or ``python -m instruments.gateway``):
every entry of the gateway file (:mod:`models.gateway`) names a registered driver and its
options, and becomes an :class:`~instruments.server.InstrumentServer` hosting that driver,
all in one asyncio loop, with the usual CURVE keys and request journals. Drivers are looked
up in :data:`~instruments.driver.DRIVERS`, which finds other packages' drivers through the
``sdlab.drivers`` entry points; this module knows no driver itself.

Every entry is checked before anything starts: the driver must be registered, its options
must validate against its ``Options`` model, and it must have a simulated backend if asked
to run simulated. Problems are reported together with the key path of each
(``instruments[2].options.port``), and the command exits 2.

Command line::

    python -m instruments.gateway FILE [--only NAME ...] [--journal-dir DIR] [--simulate]
                                       [--bind ENDPOINT]
                                       [--curve-secret-key FILE --curve-allow DIR]

When every server is bound it prints exactly one line of JSON to stdout,
``{"ready": true, "endpoints": {name: endpoint}}``, then serves until SIGINT or SIGTERM and
exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import zmq
import zmq.asyncio
from pydantic import BaseModel, ValidationError

from instruments.driver import Driver, get_driver
from instruments.security import CurveServerKeys
from instruments.server import InstrumentServer
from models.errors import (
    InvalidCampaignError,
    LinkSecurityError,
    ProblemLike,
    RegistryError,
    parse_key_path,
)
from models.gateway import GatewayEntry, GatewayFile, load_gateway

logger = logging.getLogger(__name__)

DEFAULT_ADDRESS = "tcp://127.0.0.1:*"
"""Where an instrument without an address is served: a free loopback port."""

_FRIENDLY = {"missing": "required key is missing", "extra_forbidden": "unknown key"}


def _validation_problems(exc: ValidationError, base: str) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        path = base + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        ctx = err.get("ctx") or {}
        if err["type"] in _FRIENDLY:
            msg = _FRIENDLY[err["type"]]
        elif err["type"] == "value_error":
            msg = str(ctx.get("error", err["msg"]))
        else:
            msg = err["msg"]
        problems.append((path, msg))
    return problems


def _construct(
    cls: type[Driver], name: str, raw: Mapping[str, Any], simulated: bool, base: str
) -> Driver:
    """Validate ``raw`` with ``cls.Options`` and build the driver; problems name ``base``."""
    try:
        options: BaseModel = cls.Options.model_validate(dict(raw))
    except ValidationError as exc:
        raise InvalidCampaignError(None, _validation_problems(exc, base)) from exc
    try:
        return cls(name, options, simulated=simulated)
    except InvalidCampaignError as exc:  # problems relative to the options table
        raise InvalidCampaignError(
            None, [p.under(*parse_key_path(base)) for p in exc.problems]
        ) from exc
    except ValidationError as exc:
        raise InvalidCampaignError(None, _validation_problems(exc, base)) from exc
    except (ValueError, TypeError, RegistryError) as exc:
        raise InvalidCampaignError(None, [(base, f"{type(exc).__name__}: {exc}")]) from exc


def build_driver(entry: GatewayEntry, *, simulate: bool = False) -> Driver:
    """Build the driver of one hosted instrument (nothing is connected yet).

    Args:
        entry: The instrument's entry and key path.
        simulate: Run every driver against its simulated backend (``sdlab run --simulate``).

    Raises:
        InvalidCampaignError: Naming the key path of each problem (``instruments[i].driver``
            for an unknown driver or one without a simulated backend,
            ``instruments[i].options.<key>`` for a bad option,
            ``instruments[i].simulated.<key>`` for a bad simulator table).
    """
    spec, path = entry.spec, entry.key_path
    table = spec.simulator
    if table is not None:
        driver_name, raw, simulated, base = (
            table.driver,
            table.model_dump(),
            True,
            f"{path}.simulated",
        )
    else:
        assert spec.driver is not None
        driver_name, raw, base = spec.driver, spec.options, f"{path}.options"
        simulated = spec.simulated is True or simulate
    driver_key = f"{path}.simulated.driver" if table is not None else f"{path}.driver"
    try:
        cls = get_driver(driver_name)
    except RegistryError as exc:
        raise InvalidCampaignError(None, [(driver_key, str(exc))]) from exc
    if simulated and not cls.supports_simulation:
        why = "--simulate" if simulate and spec.simulated is not True else "simulated = true"
        raise InvalidCampaignError(
            None,
            [(driver_key, f"driver {driver_name!r} has no simulated backend (asked by {why})")],
        )
    return _construct(cls, spec.name, raw, simulated, base)


def build_drivers(gateway: GatewayFile, *, simulate: bool = False) -> list[Driver]:
    """Build every hosted driver, collecting the problems of all entries.

    Raises:
        InvalidCampaignError: With every entry's problems, naming the file.
    """
    drivers: list[Driver] = []
    problems: list[ProblemLike] = []
    for entry in gateway.entries:
        try:
            drivers.append(build_driver(entry, simulate=simulate))
        except InvalidCampaignError as exc:
            problems.extend(exc.problems)
    if problems:
        raise InvalidCampaignError(gateway.source, problems)
    return drivers


class Gateway:
    """Running instrument servers, as :func:`serve_gateway` returns them.

    Use it as an async context manager, or call :meth:`stop` when done.

    Args:
        servers: The started servers, keyed by instrument name.
    """

    def __init__(self, servers: dict[str, InstrumentServer]) -> None:
        self.servers = servers

    @property
    def endpoints(self) -> dict[str, str]:
        """Bound endpoint of each instrument, keyed by instrument name."""
        return {name: s.endpoint for name, s in self.servers.items()}

    async def stop(self) -> None:
        """Stop every server (running actions are cancelled, journals and drivers closed)."""
        results = await asyncio.gather(
            *(s.stop() for s in self.servers.values()), return_exceptions=True
        )
        for name, result in zip(self.servers, results, strict=True):
            if isinstance(result, BaseException):
                logger.error("instrument %s: stop failed: %r", name, result)

    async def __aenter__(self) -> Gateway:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def serve_gateway(
    gateway: GatewayFile,
    *,
    journal_dir: Path | None = None,
    context: zmq.asyncio.Context | None = None,
    bind: str | None = None,
    curve: CurveServerKeys | None = None,
    simulate: bool = False,
) -> Gateway:
    """Build every driver, then connect and serve each in the running event loop.

    Args:
        gateway: The instruments to host.
        journal_dir: Directory of the request journals, one ``<name>.jsonl`` per instrument
            (created if missing); ``None`` keeps no journal.
        context: ZeroMQ context for the sockets (default: the process-wide one).
        bind: Endpoint to bind instead of the entry's address (only with one entry: a
            supervisor restarting a crashed server binds the endpoint it had).
        curve: CURVE keys for every server whose entry has no ``curve`` server keys.
        simulate: Run every driver against its simulated backend.

    Returns:
        The running servers; read their endpoints from :attr:`Gateway.endpoints`.

    Raises:
        InvalidCampaignError: If a driver cannot be built (nothing is started), or one
            cannot connect (``instruments[i].options``), an address cannot be bound
            (``instruments[i].address``), or a link would be plaintext on a non-loopback
            address or its keys are unusable (``instruments[i].curve...``); servers
            already started are stopped.
        ValueError: If ``bind`` is given with more than one entry.
    """
    if bind is not None and len(gateway.entries) != 1:
        raise ValueError("bind needs exactly one instrument")
    drivers = build_drivers(gateway, simulate=simulate)
    servers: dict[str, InstrumentServer] = {}
    running = Gateway(servers)
    for entry, driver in zip(gateway.entries, drivers, strict=True):
        spec, path = entry.spec, entry.key_path
        address = bind or spec.address or DEFAULT_ADDRESS
        journal = journal_dir / f"{spec.name}.jsonl" if journal_dir is not None else None
        problem: tuple[str, str] | None = None
        try:
            keys = CurveServerKeys.from_spec(spec.curve, spec.name) or curve
            server = driver.make_server(
                address, journal_path=journal, context=context, curve=keys, insecure=spec.insecure
            )
            await server.start()
        except LinkSecurityError as exc:
            problem = (f"{path}.{exc.key or 'curve'}", str(exc))
        except (zmq.ZMQError, OSError) as exc:
            problem = (f"{path}.address", f"cannot serve on {address!r}: {exc}")
        except Exception as exc:  # the driver's connect() failed
            logger.exception("instrument %s: cannot start", spec.name)
            problem = (
                f"{path}.simulated" if spec.simulator is not None else f"{path}.options",
                f"driver {driver.driver_name!r} could not connect: {type(exc).__name__}: {exc}",
            )
        except BaseException:
            await running.stop()
            raise
        if problem is not None:
            await running.stop()
            with contextlib.suppress(Exception):
                await driver.close()
            raise InvalidCampaignError(gateway.source, [problem])
        servers[spec.name] = server
        logger.info(
            "instrument %s (%s%s) serving on %s",
            spec.name,
            driver.driver_name,
            ", simulated" if driver.simulated else "",
            server.endpoint,
        )
    return running


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Serve the instruments of a gateway (or campaign) file."
    )
    parser.add_argument("file", type=Path, help="gateway, simulation or campaign TOML file")
    parser.add_argument(
        "--only", action="append", metavar="NAME", default=None, help="serve only this one"
    )
    parser.add_argument(
        "--journal-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep a request journal <DIR>/<name>.jsonl per instrument",
    )
    parser.add_argument(
        "--simulate", action="store_true", help="run every driver on its simulated backend"
    )
    parser.add_argument(
        "--bind",
        default=None,
        metavar="ENDPOINT",
        help="bind this endpoint instead of the file's address (one instrument only)",
    )
    parser.add_argument(
        "--curve-secret-key",
        type=Path,
        default=None,
        metavar="FILE",
        help="serve over CURVE with this secret key file (NAME.key_secret)",
    )
    parser.add_argument(
        "--curve-allow",
        type=Path,
        default=None,
        metavar="DIR",
        help="directory of the public keys (*.key) of the clients to answer",
    )
    parser.add_argument(
        "--log-level",
        default="WARNING",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level on stderr (default WARNING)",
    )
    return parser


async def _serve_until_signalled(
    gateway: GatewayFile,
    journal_dir: Path | None,
    bind: str | None,
    curve: CurveServerKeys | None,
    simulate: bool,
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        running = await serve_gateway(
            gateway, journal_dir=journal_dir, bind=bind, curve=curve, simulate=simulate
        )
    except InvalidCampaignError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    try:
        line = json.dumps({"ready": True, "endpoints": running.endpoints})
        with contextlib.suppress(BrokenPipeError):
            print(line, flush=True)
        await stop.wait()
    finally:
        await running.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "python -m instruments.gateway") -> int:
    """Entry point of the gateway command line.

    Args:
        argv: Command-line arguments without the program name (default ``sys.argv[1:]``).
        prog: Program name for the usage message.

    Returns:
        The exit status: 0 after a clean stop on SIGINT/SIGTERM, 2 for a bad file, entry,
        option or address (the message on stderr names the file and key path); nothing
        is served then.
    """
    args = _parser(prog).parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    source = str(args.file)
    try:
        gateway = load_gateway(args.file).only(args.only or [])
        if args.bind is not None and len(gateway.entries) != 1:
            raise InvalidCampaignError(source, [("--bind", "needs exactly one instrument")])
        curve = None
        if (args.curve_secret_key is None) != (args.curve_allow is None):
            raise InvalidCampaignError(
                source, [("--curve-secret-key", "give --curve-secret-key and --curve-allow")]
            )
        if args.curve_secret_key is not None:
            curve = CurveServerKeys.load(args.curve_secret_key, args.curve_allow, "*")
        build_drivers(gateway, simulate=args.simulate)  # every problem before anything starts
    except (InvalidCampaignError, LinkSecurityError, RegistryError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    return asyncio.run(
        _serve_until_signalled(gateway, args.journal_dir, args.bind, curve, args.simulate)
    )


if __name__ == "__main__":
    sys.exit(main())
