"""Serve simulated instruments over the real ``sdlab/1`` ZeroMQ protocol.

Each simulated instrument of a campaign or simulation file becomes an
:class:`~instruments.server.InstrumentServer` hosting its simulated driver, all in one
asyncio loop. The controller, the tests and the benchmarks talk to them with the same
:class:`~instruments.client.InstrumentClient` they would use for real hardware.

Command line::

    python -m sim.serve FILE [--only NAME ...] [--journal-dir DIR] [--bind ENDPOINT]
                             [--curve-secret-key FILE --curve-allow DIR]

When every server is bound it prints exactly one line of JSON to stdout,
``{"ready": true, "endpoints": {name: endpoint}}``, then serves until SIGINT or SIGTERM and
exits 0. A broken file (or an address that cannot be bound) is reported on stderr with the
offending key path, and the exit status is 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import zmq
import zmq.asyncio

from instruments.driver import Driver
from instruments.security import CurveServerKeys
from instruments.server import InstrumentServer
from models.campaign import InstrumentSpec
from models.campaign_file import load_simulation
from models.errors import InvalidCampaignError, LinkSecurityError, ProblemLike, parse_key_path
from sim.drivers import make_driver
from sim.faults import FaultyServer, faulty

logger = logging.getLogger(__name__)

DEFAULT_ADDRESS = "tcp://127.0.0.1:*"
"""Where an instrument without an address is served: a free loopback port."""


def _key_paths(specs: Sequence[InstrumentSpec], key_paths: Sequence[str] | None) -> list[str]:
    if key_paths is None:
        return [f"instruments[{i}]" for i in range(len(specs))]
    if len(key_paths) != len(specs):
        raise ValueError("key_paths must have one entry per spec")
    return list(key_paths)


def build_drivers(
    specs: Sequence[InstrumentSpec],
    *,
    source: str | None = None,
    key_paths: Sequence[str] | None = None,
) -> list[Driver]:
    """Build the simulated driver of every instrument.

    Args:
        specs: Instrument entries, each with a ``simulated`` table.
        source: The file the specs came from, for error messages.
        key_paths: Key path of each spec in its file (default ``instruments[i]``).

    Returns:
        One driver per spec, in order.

    Raises:
        InvalidCampaignError: Naming the key path of every instrument that is not simulated
            or whose driver, world or options are bad (e.g.
            ``instruments[1].simulated.world``).
    """
    paths = _key_paths(specs, key_paths)
    drivers: list[Driver] = []
    problems: list[ProblemLike] = []
    for path, spec in zip(paths, specs, strict=True):
        if spec.simulated is None:
            problems.append((f"{path}.simulated", "required key is missing"))
            continue
        try:
            drivers.append(make_driver(spec.name, spec.simulated))
        except InvalidCampaignError as exc:
            problems.extend(p.under(*parse_key_path(path), "simulated") for p in exc.problems)
    if problems:
        raise InvalidCampaignError(source, problems)
    return drivers


class SimulatedInstruments:
    """Running servers of simulated instruments, as :func:`serve_instruments` returns them.

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
        """Stop every server (running actions are cancelled, journals closed)."""
        results = await asyncio.gather(
            *(s.stop() for s in self.servers.values()), return_exceptions=True
        )
        for name, result in zip(self.servers, results, strict=True):
            if isinstance(result, BaseException):
                logger.error("simulated instrument %s: stop failed: %r", name, result)

    async def __aenter__(self) -> SimulatedInstruments:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def serve_instruments(
    specs: Sequence[InstrumentSpec],
    *,
    journal_dir: Path | None = None,
    context: zmq.asyncio.Context | None = None,
    source: str | None = None,
    key_paths: Sequence[str] | None = None,
    bind: str | None = None,
    curve: CurveServerKeys | None = None,
) -> SimulatedInstruments:
    """Start one instrument server per simulated instrument in the running event loop.

    Args:
        specs: Instrument entries, each with a ``simulated`` table. An entry without an
            address is served on a free loopback port (``tcp://127.0.0.1:*``).
        journal_dir: Directory of the request journals, one ``<name>.jsonl`` per instrument
            (created if missing); ``None`` keeps no journal.
        context: ZeroMQ context for the sockets (default: the process-wide one).
        source: The file the specs came from, for error messages.
        key_paths: Key path of each spec in its file (default ``instruments[i]``).
        bind: Endpoint to bind instead of the spec's address (only with one spec: a
            supervisor restarting a crashed server binds the endpoint it had).
        curve: CURVE keys for every server whose entry has no ``curve`` server keys.

    Returns:
        The running servers; read their endpoints from :attr:`SimulatedInstruments.endpoints`.

    Raises:
        InvalidCampaignError: If a driver cannot be built or an address cannot be bound
            (key path ``instruments[i].address``), or a link would be plaintext on a
            non-loopback address or its keys are unusable (``instruments[i].curve...``);
            servers already started are stopped.
    """
    paths = _key_paths(specs, key_paths)
    drivers = build_drivers(specs, source=source, key_paths=paths)
    servers: dict[str, InstrumentServer] = {}
    running = SimulatedInstruments(servers)
    if bind is not None and len(specs) != 1:
        raise ValueError("bind needs exactly one instrument")
    for path, spec, driver in zip(paths, specs, drivers, strict=True):
        address = bind or spec.address or DEFAULT_ADDRESS
        journal = journal_dir / f"{spec.name}.jsonl" if journal_dir is not None else None
        try:
            keys = CurveServerKeys.from_spec(spec.curve, spec.name) or curve
            server: InstrumentServer
            if spec.simulated is not None and spec.simulated.faults is not None:
                hosted = faulty(
                    driver, spec.simulated.faults, spec.simulated.duration_s, journal_dir
                )
                server = FaultyServer(
                    hosted,
                    address,
                    journal_path=journal,
                    context=context,
                    curve=keys,
                    insecure=spec.insecure,
                )
            else:
                server = InstrumentServer(
                    driver,
                    address,
                    journal_path=journal,
                    context=context,
                    curve=keys,
                    insecure=spec.insecure,
                )
            await server.start()
        except LinkSecurityError as exc:
            await running.stop()
            raise InvalidCampaignError(
                source, [(f"{path}.{exc.key or 'curve'}", str(exc))]
            ) from exc
        except (zmq.ZMQError, OSError) as exc:
            await running.stop()
            raise InvalidCampaignError(
                source, [(f"{path}.address", f"cannot serve on {address!r}: {exc}")]
            ) from exc
        except BaseException:
            await running.stop()
            raise
        servers[spec.name] = server
        logger.info("simulated instrument %s serving on %s", spec.name, server.endpoint)
    return running


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sim.serve",
        description="Serve the simulated instruments of a campaign or simulation file.",
    )
    parser.add_argument("file", type=Path, help="campaign or simulation TOML file")
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        default=None,
        help="serve only this instrument (repeatable)",
    )
    parser.add_argument(
        "--journal-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep a request journal <DIR>/<name>.jsonl per instrument",
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


def _select(
    specs: Sequence[InstrumentSpec], only: Sequence[str] | None, source: str
) -> tuple[list[InstrumentSpec], list[str]]:
    indexed = list(enumerate(specs))
    if only:
        known = [s.name for s in specs]
        missing = [n for n in only if n not in known]
        if missing:
            raise InvalidCampaignError(
                source,
                [
                    ("--only", f"no instrument named {n!r} (known: {', '.join(known)})")
                    for n in missing
                ],
            )
        indexed = [(i, s) for i, s in indexed if s.name in only]
    return [s for _, s in indexed], [f"instruments[{i}]" for i, _ in indexed]


async def _serve_until_signalled(
    specs: list[InstrumentSpec],
    paths: list[str],
    journal_dir: Path | None,
    source: str,
    bind: str | None,
    curve: CurveServerKeys | None = None,
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        running = await serve_instruments(
            specs,
            journal_dir=journal_dir,
            source=source,
            key_paths=paths,
            bind=bind,
            curve=curve,
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m sim.serve``.

    Args:
        argv: Command-line arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        The exit status: 0 after a clean stop on SIGINT/SIGTERM, 2 for a bad file or
        address (the message on stderr names the key path).
    """
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    source = str(args.file)
    try:
        sim = load_simulation(args.file)
        specs, paths = _select(sim.instruments, args.only, source)
        if args.bind is not None and len(specs) != 1:
            raise InvalidCampaignError(source, [("--bind", "needs exactly one instrument")])
        curve = None
        if (args.curve_secret_key is None) != (args.curve_allow is None):
            raise InvalidCampaignError(
                source, [("--curve-secret-key", "give --curve-secret-key and --curve-allow")]
            )
        if args.curve_secret_key is not None:
            curve = CurveServerKeys.load(args.curve_secret_key, args.curve_allow, "*")
    except InvalidCampaignError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    except LinkSecurityError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    journal_dir: Path | None = args.journal_dir
    return asyncio.run(_serve_until_signalled(specs, paths, journal_dir, source, args.bind, curve))


if __name__ == "__main__":
    sys.exit(main())
