"""The lab file (``lab.toml``): a lab's instruments and shared resources, declared once.

Several campaigns run in one lab at the same time, each by its own controller, and share
its instruments and resources (the robot arm, the crucible racks). The lab file declares
them once::

    [lab]
    name = "demo-lab"

    [defaults]
    client_keys = "keys/controller.key_secret"   # the controllers' CURVE secret key

    [[gateways]]
    name = "bench-pc"
    host = "10.0.0.12"

    [[instruments]]
    name = "station-1"
    kind = "station"
    address = "tcp://10.0.0.12:5801"
    gateway = "bench-pc"
    curve = { server_public_key = "keys/station-1.key" }

    [[resources]]
    name = "arm"
    capacity = 1

``sdlab lab apply lab.toml`` records it in the store; a campaign file then names lab
instruments in its ``[lab]`` table (by name or by kind) instead of repeating addresses, and
:func:`resolve_campaign_data` turns those names into the campaign's ``[[instruments]]`` and
``[[resources]]``. An ``[[instruments]]`` entry is a campaign file's entry plus ``gateway``;
its ``driver``/``simulated`` keys are for the gateway that hosts it (``sdlab instruments
serve lab.toml``), never for the campaigns. ``docs/deployment.md`` describes the file.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.campaign import CampaignLabSpec
from models.campaign_file import _anchor_key_paths, parse_spec, read_toml
from models.errors import InvalidCampaignError, Problem
from models.instrument_spec import InstrumentSpec
from models.params import NAME_PATTERN
from models.resources import ResourceSpec, resource_problems

__all__ = [
    "CampaignLabSpec",
    "GatewaySpec",
    "LabDefaults",
    "LabInfo",
    "LabInstrumentSpec",
    "LabSpec",
    "load_lab",
    "resolve_campaign_data",
]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LabInfo(_Spec):
    """The ``[lab]`` table of a lab file.

    Attributes:
        name: The lab's name; campaign files name it in their own ``[lab]`` table.
        description: Free text for the operator.
    """

    name: str = Field(pattern=NAME_PATTERN, max_length=128)
    description: str = ""


class LabDefaults(_Spec):
    """The ``[defaults]`` table: settings every lab instrument gets unless it sets its own.

    Attributes:
        client_keys: The controllers' CURVE secret key file, for every instrument whose
            ``curve`` gives only ``server_public_key``.
        timeout_s: Time a controller waits for one action (``None``: the controller's).
        priority: Priority of a campaign that joins the lab (higher goes first; an
            operator changes it with ``sdlab lab priority``).
    """

    client_keys: Path | None = None
    timeout_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    priority: int = Field(default=0, ge=-1000, le=1000)


class GatewaySpec(_Spec):
    """One ``[[gateways]]`` entry: a lab PC running ``sdlab instruments serve``.

    Attributes:
        name: The gateway's name, used in ``instruments[].gateway``.
        host: Where it runs (host name or IP address), for the operator.
    """

    name: str = Field(pattern=NAME_PATTERN, max_length=128)
    host: str = Field(min_length=1, max_length=255)


class LabInstrumentSpec(InstrumentSpec):
    """One ``[[instruments]]`` entry of a lab file: a campaign entry plus its gateway.

    Attributes:
        gateway: The ``[[gateways]]`` entry that hosts it (``None``: not said).
    """

    gateway: str | None = Field(default=None, pattern=NAME_PATTERN)

    def for_campaign(self) -> InstrumentSpec:
        """The entry as a campaign sees it: its address and keys, not how it is hosted."""
        data = self.model_dump(exclude={"gateway", "driver", "options", "simulated"})
        curve = data.get("curve")
        if curve is not None:
            curve["server_secret_key"] = None
            curve["allowed_clients"] = None
            if curve["server_public_key"] is None:
                data["curve"] = None
        return InstrumentSpec.model_validate(data)


class LabSpec(_Spec):
    """A whole lab file.

    Attributes:
        lab: Name and description.
        defaults: Defaults of the instruments and campaigns.
        gateways: The lab PCs that host instruments.
        instruments: The lab's instruments; every one has an ``address``.
        resources: Resources the campaigns' steps share (``[[resources]]`` of a campaign
            file: ``capacity`` or named ``units``).
    """

    lab: LabInfo
    defaults: LabDefaults = Field(default_factory=LabDefaults)
    gateways: list[GatewaySpec] = Field(default_factory=list, max_length=256)
    instruments: list[LabInstrumentSpec] = Field(min_length=1, max_length=1024)
    resources: list[ResourceSpec] = Field(default_factory=list, max_length=256)

    @model_validator(mode="after")
    def _cross_checks(self) -> LabSpec:
        problems = self.cross_check_problems()
        if problems:
            raise InvalidCampaignError(None, problems)
        return self

    def cross_check_problems(self) -> list[Problem]:
        """Names used twice, unknown gateways, instruments without an address."""
        kinds = {i.kind for i in self.instruments}
        problems = resource_problems(self.resources, [], kinds, None)
        gateways = [g.name for g in self.gateways]
        for table, names in (
            ("gateways", gateways),
            ("instruments", [i.name for i in self.instruments]),
        ):
            for i, n in enumerate(names):
                if n in names[:i]:
                    problems.append(Problem((table, i, "name"), f"{n!r} is used twice"))
        units = {i.name for i in self.instruments}
        for i, res in enumerate(self.resources):
            clash = sorted(units & set(res.unit_names))
            if clash:
                problems.append(
                    Problem(
                        ("resources", i),
                        f"unit {clash[0]!r} is also an instrument name; lab units are one "
                        "namespace",
                    )
                )
            units |= set(res.unit_names)
        for i, inst in enumerate(self.instruments):
            if inst.address is None:
                problems.append(
                    Problem(
                        ("instruments", i, "address"),
                        "required key is missing (campaigns reach lab instruments at it)",
                    )
                )
            if inst.gateway is not None and inst.gateway not in gateways:
                known = ", ".join(gateways) or "none declared"
                problems.append(
                    Problem(
                        ("instruments", i, "gateway"),
                        f"unknown gateway {inst.gateway!r} ({known})",
                    )
                )
        return problems

    def instrument(self, name: str) -> LabInstrumentSpec | None:
        """The instrument called ``name``, if the lab has one."""
        return next((i for i in self.instruments if i.name == name), None)

    def resource(self, name: str) -> ResourceSpec | None:
        """The resource called ``name``, if the lab has one."""
        return next((r for r in self.resources if r.name == name), None)

    def units(self) -> dict[str, str]:
        """Every grantable unit of the lab with its pool: instruments (pool = their kind)
        and resource units (pool = the resource)."""
        out = {i.name: f"kind:{i.kind}" for i in self.instruments}
        for r in self.resources:
            out.update(dict.fromkeys(r.unit_names, r.name))
        return out

    def spec_hash(self) -> str:
        """A stable hash of the lab's content."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


def _fill_client_keys(data: dict[str, Any]) -> dict[str, Any]:
    """Give each instrument whose ``curve`` names only the server key the default client key."""
    defaults = data.get("defaults")
    client = defaults.get("client_keys") if isinstance(defaults, dict) else None
    for entry in data.get("instruments") or []:
        curve = entry.get("curve") if isinstance(entry, dict) else None
        if (
            isinstance(curve, dict)
            and curve.get("server_public_key")
            and "client_keys" not in curve
            and client is not None
        ):
            curve["client_keys"] = client
    return data


def load_lab(path: str | Path) -> LabSpec:
    """Load and validate a lab file.

    Relative key paths (``curve``, ``defaults.client_keys``) are made relative to the file.

    Raises:
        InvalidCampaignError: If the file cannot be read, is not TOML or breaks the schema;
            its problems name the key path of each problem.
    """
    base = Path(path).resolve().parent
    data = read_toml(path)
    defaults = data.get("defaults")
    if isinstance(defaults, dict):
        key = defaults.get("client_keys")
        if isinstance(key, str) and key and not Path(key).is_absolute():
            defaults["client_keys"] = str(base / key)
    data = _anchor_key_paths(_fill_client_keys(data), base)
    return parse_spec(data, LabSpec, str(path))


def resolve_campaign_data(
    data: dict[str, Any], lab: LabSpec | None, source: str | None = None
) -> dict[str, Any]:
    """A campaign file's data with the lab instruments and resources its ``[lab]`` names.

    The named instruments are appended to its ``[[instruments]]`` (address, kind, keys) and
    the named resources to its ``[[resources]]``; the ``[lab]`` table is kept, so the
    controller knows which of them it shares with other campaigns.

    Args:
        data: The parsed campaign file (not changed).
        lab: The lab it names, as recorded in the store (``None``: not recorded).
        source: The file, for error messages.

    Returns:
        The data to validate as a :class:`~models.campaign.CampaignSpec`.

    Raises:
        InvalidCampaignError: If the ``[lab]`` table is malformed, names another lab or a
            lab not recorded, or an instrument, kind or resource the lab lacks.
    """
    if "lab" not in data:
        return data
    table = data["lab"]
    if not isinstance(table, dict):
        raise InvalidCampaignError(source, [Problem(("lab",), "expected a table")])
    try:
        want = parse_spec(table, CampaignLabSpec, source)
    except InvalidCampaignError as exc:
        raise InvalidCampaignError(source, [p.under("lab") for p in exc.problems]) from exc
    if lab is None or lab.lab.name != want.name:
        raise InvalidCampaignError(
            source,
            [
                Problem(
                    ("lab", "name"),
                    f"lab {want.name!r} is not recorded in the store: run "
                    "`sdlab lab apply LAB.toml` with the same --db first",
                )
            ],
        )
    out = copy.deepcopy(data)
    problems: list[Problem] = []
    chosen: list[LabInstrumentSpec] = []
    known = ", ".join(i.name for i in lab.instruments)
    for j, name in enumerate(want.instruments):
        inst = lab.instrument(name)
        if inst is None:
            problems.append(
                Problem(("lab", "instruments", j), f"no instrument {name!r} in the lab ({known})")
            )
        elif inst not in chosen:
            chosen.append(inst)
    kinds = sorted({i.kind for i in lab.instruments})
    for j, kind in enumerate(want.kinds):
        of_kind = [i for i in lab.instruments if i.kind == kind]
        if not of_kind:
            problems.append(
                Problem(
                    ("lab", "kinds", j),
                    f"no instrument of kind {kind!r} in the lab ({', '.join(kinds)})",
                )
            )
        chosen += [i for i in of_kind if i not in chosen]
    res_names = ", ".join(r.name for r in lab.resources) or "none declared"
    resources: list[dict[str, Any]] = []
    for j, name in enumerate(want.resources):
        res = lab.resource(name)
        if res is None:
            problems.append(
                Problem(("lab", "resources", j), f"no resource {name!r} in the lab ({res_names})")
            )
        else:
            resources.append(res.model_dump(exclude_none=True))
    if problems:
        raise InvalidCampaignError(source, problems)
    entries = list(out.get("instruments") or [])
    for inst in chosen:
        entry = inst.for_campaign().model_dump(mode="json", exclude_defaults=True)
        if inst.timeout_s is None and lab.defaults.timeout_s is not None:
            entry["timeout_s"] = lab.defaults.timeout_s
        entries.append(entry)
    out["instruments"] = entries
    if resources:
        out["resources"] = list(out.get("resources") or []) + resources
    return out
