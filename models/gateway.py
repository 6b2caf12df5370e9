"""The gateway file (``LAB.toml``): the instruments one gateway process hosts.

A gateway file is a list of ``[[instruments]]`` entries, the same entries a campaign file
declares (:class:`~models.campaign.InstrumentSpec`). Each entry a gateway hosts names a
registered ``driver`` with its ``options`` (``simulated = true`` runs the driver against its
simulated backend), or carries an ``[instruments.simulated]`` table that serves it from one
of sdlab's simulators. ``address`` is the endpoint to bind (default: a free loopback port).

Example::

    [[instruments]]
    name = "furnace-1"
    kind = "furnace"
    address = "tcp://127.0.0.1:5601"
    driver = "serial-furnace"
    options = { port = "/dev/ttyUSB0", baudrate = 9600 }

A campaign file is accepted too: its hosted entries (with a driver or a simulator table)
are the gateway's; so is a lab file (:mod:`models.lab`), whose hosted instruments are.
The driver-specific ``options`` are checked by the gateway, which knows the drivers
(:mod:`instruments.gateway`); this module checks the file's shape only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from models.campaign_file import _anchor_key_paths, parse_spec, read_toml
from models.errors import InvalidCampaignError
from models.instrument_spec import InstrumentSpec


@dataclass(frozen=True)
class GatewayEntry:
    """One hosted instrument and where it sits in its file.

    Attributes:
        spec: The ``[[instruments]]`` entry (already validated).
        key_path: Its key path in the file (``instruments[2]``), for error messages.
    """

    spec: InstrumentSpec
    key_path: str


@dataclass(frozen=True)
class GatewayFile:
    """The instruments a gateway hosts, with the file they came from.

    Attributes:
        source: The file, for error messages.
        entries: The hosted instruments, in file order.
    """

    source: str | None
    entries: list[GatewayEntry]

    def only(self, names: list[str]) -> GatewayFile:
        """The same file with only the named instruments (key paths are kept).

        Raises:
            InvalidCampaignError: Naming ``--only`` for a name the file does not host.
        """
        if not names:
            return self
        known = [e.spec.name for e in self.entries]
        missing = [n for n in names if n not in known]
        if missing:
            raise InvalidCampaignError(
                self.source,
                [
                    ("--only", f"no hosted instrument named {n!r} (known: {', '.join(known)})")
                    for n in missing
                ],
            )
        return replace(self, entries=[e for e in self.entries if e.spec.name in names])


def hosted_entries(specs: list[InstrumentSpec]) -> list[GatewayEntry]:
    """The entries of ``specs`` a gateway hosts, with their key paths ``instruments[i]``."""
    return [
        GatewayEntry(spec=s, key_path=f"instruments[{i}]") for i, s in enumerate(specs) if s.hosted
    ]


class _InstrumentsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    instruments: list[InstrumentSpec] = Field(min_length=1)


def load_gateway(path: str | Path) -> GatewayFile:
    """Load a gateway file (or the hosted instruments of a campaign file).

    Raises:
        InvalidCampaignError: If the file cannot be read or is not TOML, an entry is
            malformed, a gateway file's entry names neither a driver nor a simulator
            (``instruments[i].driver``), names are used twice, or a campaign file hosts
            nothing.
    """
    source = str(path)
    data = _anchor_key_paths(read_toml(path), Path(path).resolve().parent)
    if "lab" in data and "campaign" not in data:
        from models.lab import load_lab  # it imports models.campaign_file, as this does

        lab = load_lab(path)
        specs = [
            InstrumentSpec.model_validate(i.model_dump(exclude={"gateway"}))
            for i in lab.instruments
        ]
        hosted = hosted_entries(specs)
        if not hosted:
            raise InvalidCampaignError(
                source, [("instruments", "no lab instrument with a driver or a simulator")]
            )
        return GatewayFile(source=source, entries=hosted)
    parsed = parse_spec({"instruments": data.get("instruments", [])}, _InstrumentsFile, source)
    specs = list(parsed.instruments)
    problems: list[tuple[str, str]] = []
    names = [s.name for s in specs]
    for i, n in enumerate(names):
        if n in names[:i]:
            problems.append((f"instruments[{i}].name", f"{n!r} is used twice"))
    if "campaign" not in data:
        problems += [
            (
                f"instruments[{i}].driver",
                "required key is missing (a gateway hosts drivers; or give an "
                "[instruments.simulated] table)",
            )
            for i, s in enumerate(specs)
            if not s.hosted
        ]
    entries = hosted_entries(specs)
    if not entries and not problems:
        problems.append(("instruments", "no instrument with a driver or a simulator to host"))
    if problems:
        raise InvalidCampaignError(source, problems)
    return GatewayFile(source=source, entries=entries)
