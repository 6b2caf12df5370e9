"""Reading campaign and simulation files: TOML in, a validated spec or key-path problems out.

:func:`load_campaign` reads a campaign file into a :class:`~models.campaign.CampaignSpec`;
:func:`load_simulation` reads the ``[[instruments]]`` of a file for ``sdlab instruments
serve``; :func:`campaign_toml` writes a spec made in Python as a campaign file. The readers
raise nothing but :class:`~models.errors.InvalidCampaignError`, whose ``problems``
(:class:`~models.errors.Problem`) name the key path of every problem found, as the file's
author wrote it: pydantic's locations lose the union tags it adds, and the cross
checks of :class:`~models.campaign.CampaignSpec` arrive as the problems they raised.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from models.campaign import CampaignSpec, SimulationFile
from models.errors import InvalidCampaignError, KeyPath, Problem

if TYPE_CHECKING:
    from models.lab import LabSpec

__all__ = ["campaign_toml", "load_campaign", "load_simulation", "parse_spec", "read_toml"]

_FRIENDLY = {
    "missing": "required key is missing",
    "extra_forbidden": "unknown key",
}

_M = TypeVar("_M", bound=BaseModel)

_UNION_TAGS = ("continuous", "integer", "categorical")


def _real_loc(data: object, loc: KeyPath, missing: bool) -> KeyPath:
    """``loc`` without the parts that are not keys of ``data``.

    pydantic puts the tag of a union member (``continuous``, ``float``, ``str``, a
    ``function-after[...]``) into the location of an error inside that member; users never
    wrote those, so they are left out of the key path. A key reported missing is kept.
    """
    out: list[int | str] = []
    node: object = data
    for i, part in enumerate(loc):
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_list or (isinstance(node, Mapping) and part in node):
            node = node[part]  # type: ignore[index]
        elif missing and i == len(loc) - 1 and isinstance(node, Mapping):
            pass  # the key the user has to add
        else:
            continue
        out.append(part)
    return tuple(out)


def _message(err: Mapping[str, Any]) -> str:
    """One pydantic error in the words of the campaign file's author."""
    etype = err["type"]
    ctx = err.get("ctx") or {}
    if etype in _FRIENDLY:
        return _FRIENDLY[etype]
    if etype == "literal_error":
        return f"expected {ctx.get('expected')}"
    if etype == "union_tag_invalid":
        return f"unknown type {ctx.get('tag')!r}, expected {ctx.get('expected_tags')}"
    if etype == "union_tag_not_found":
        return "required key is missing"
    if etype == "value_error":
        return str(ctx.get("error", err["msg"]))
    return str(err["msg"])


def problems_of(exc: ValidationError, data: object = None) -> list[Problem]:
    """The problems of a failed validation, with the key paths of the file's author.

    Args:
        exc: What pydantic raised.
        data: The data that was validated; with it, the union tags pydantic puts into its
            locations are told from real keys and left out.

    Returns:
        One problem per key path: the members of a union that each report the same key
        are merged into one message (``"a | b"``).
    """
    found: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc: KeyPath
        if data is None:
            loc = tuple(p for p in err["loc"] if p not in _UNION_TAGS)
        else:
            loc = _real_loc(data, tuple(err["loc"]), err["type"] == "missing")
        cause = (err.get("ctx") or {}).get("error")
        if err["type"] == "value_error" and isinstance(cause, InvalidCampaignError):
            # a model's cross checks, raised as structured problems: put them where it is
            found.extend(p.under(*loc) for p in cause.problems)
            continue
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = (*loc, "type")  # the discriminator key is what is wrong
        found.append(Problem(loc, _message(err)))
    merged: dict[KeyPath, list[str]] = {}
    for problem in found:
        if problem.message not in merged.setdefault(problem.path, []):
            merged[problem.path].append(problem.message)
    return [Problem(path, " | ".join(msgs)) for path, msgs in merged.items()]


def parse_spec(data: Mapping[str, Any], model: type[_M], source: str | None = None) -> _M:
    """Validate already-parsed TOML data against ``model``.

    Raises:
        InvalidCampaignError: With one :class:`~models.errors.Problem` per key path.
    """
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise InvalidCampaignError(source, problems_of(exc, data)) from exc


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file, turning every I/O or syntax error into an InvalidCampaignError."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InvalidCampaignError(str(p), [Problem((), "file not found")]) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidCampaignError(str(p), [Problem((), f"cannot read file: {exc}")]) from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidCampaignError(str(p), [Problem((), f"invalid TOML: {exc}")]) from exc
    except RecursionError as exc:  # arrays or inline tables nested thousands deep
        raise InvalidCampaignError(
            str(p), [Problem((), "invalid TOML: nested too deeply")]
        ) from exc


_CURVE_PATHS = ("server_public_key", "client_keys", "server_secret_key", "allowed_clients")


def _anchor_key_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make the relative ``curve`` key paths of ``[[instruments]]`` relative to ``base``.

    A controller or simulated server may run in another working directory (a Ray worker),
    so key files are located from the campaign file, as its author sees them. Entries of
    the wrong shape are left for validation to report.
    """
    instruments = data.get("instruments")
    if not isinstance(instruments, list):
        return data
    for entry in instruments:
        curve = entry.get("curve") if isinstance(entry, dict) else None
        if not isinstance(curve, dict):
            continue
        for key in _CURVE_PATHS:
            value = curve.get(key)
            if isinstance(value, str) and value and not Path(value).is_absolute():
                curve[key] = str(base / value)
    return data


def load_campaign(path: str | Path, lab: LabSpec | None = None) -> CampaignSpec:
    """Load and validate a campaign file.

    Args:
        path: Path to the campaign TOML file.
        lab: The lab its ``[lab]`` table names, as recorded in the store (see
            :func:`models.lab.resolve_campaign_data`); ``None`` for a campaign of its own.

    Returns:
        The validated campaign spec.

    Raises:
        InvalidCampaignError: If the file cannot be read, is not TOML, or violates the schema;
            the error's ``problems`` name the key path of each problem.
    """
    from models.lab import resolve_campaign_data  # it imports this module

    base = Path(path).resolve().parent
    data = resolve_campaign_data(_anchor_key_paths(read_toml(path), base), lab, str(path))
    return parse_spec(data, CampaignSpec, str(path))


def campaign_toml(spec: CampaignSpec, base: Path | None = None) -> str:
    """``spec`` as the text of a campaign file that :func:`load_campaign` reads back as the
    same campaign (the same :meth:`~models.campaign.CampaignSpec.spec_hash` and budget).

    Only what the spec's author set is written (defaults stay defaults), under the keys a
    file uses. Relative CURVE key paths are made absolute against ``base`` (default: the
    working directory), since a campaign file's are read relative to the file.

    Raises:
        InvalidCampaignError: If the spec holds something a campaign file cannot say.
    """
    import tomli_w

    root = (base or Path.cwd()).resolve()
    tries = (
        spec.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude_none=True),
        spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    )
    for data in tries:
        text = tomli_w.dumps(_anchor_key_paths(data, root))
        try:
            again = parse_spec(tomllib.loads(text), CampaignSpec, "<written>")
        except InvalidCampaignError:
            continue
        same_budget = again.budget.model_dump() == spec.budget.model_dump()
        if again.spec_hash() == spec.spec_hash() and same_budget:
            return text
    raise InvalidCampaignError(
        spec.campaign.name,
        [
            Problem(
                (), "this campaign cannot be written as a campaign file that reads back the same"
            )
        ],
    )


def load_simulation(path: str | Path) -> SimulationFile:
    """Load a file of simulated instruments.

    A campaign file is accepted too: its simulated instruments are the ones returned.

    Raises:
        InvalidCampaignError: As :func:`load_campaign`; also when a simulation file lists an
            instrument that is not simulated, or a campaign file has none.
    """
    data = _anchor_key_paths(read_toml(path), Path(path).resolve().parent)
    sim = parse_spec({"instruments": data.get("instruments", [])}, SimulationFile, str(path))
    if "campaign" in data:
        chosen = [s for s in sim.instruments if s.simulator is not None]
        if not chosen:
            raise InvalidCampaignError(
                str(path), [Problem(("instruments",), "no simulated instrument")]
            )
        return SimulationFile(instruments=chosen)
    not_simulated = non_simulated_problems(sim)
    if not_simulated:
        raise InvalidCampaignError(str(path), not_simulated)
    return sim


def non_simulated_problems(sim: SimulationFile) -> list[Problem]:
    """The entries of a simulation file that are not simulated (the file refuses them)."""
    return [
        Problem(("instruments", i, "simulated"), "required key is missing")
        for i, s in enumerate(sim.instruments)
        if s.simulator is None
    ]
