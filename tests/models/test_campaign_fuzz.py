"""Property-based tests of the campaign loader: broken files never escape as tracebacks.

Hypothesis throws malformed TOML text and structurally valid TOML with invalid specs
(values of the wrong type, missing keys, unknown keys, out-of-range numbers, bad names) at
:func:`~models.campaign.load_campaign`. Every one must either load or raise
:class:`~models.errors.InvalidCampaignError` whose problems name key paths that point into the
file (a missing key's parent exists; an unknown key is named itself); nothing else may be
raised. ``tests/controller/test_cli_fuzz.py`` does the same through ``sdlab run``.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.campaign import CampaignSpec
from models.campaign_file import load_campaign, parse_spec
from models.errors import InvalidCampaignError
from tests.integration.helpers import record_figures

COUNTS: Counter[str] = Counter()

FUZZ = settings(
    derandomize=True,  # the same inputs on every run: the figures quoted are reproducible
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

VALID: dict[str, Any] = {
    "campaign": {"name": "fuzz", "description": "d", "seed": 1},
    "parameters": [
        {"name": "temperature_c", "type": "continuous", "lower": 20.0, "upper": 900.0},
        {"name": "steps", "type": "integer", "lower": 1, "upper": 5},
        {"name": "gas", "type": "categorical", "choices": ["air", "N2"]},
    ],
    "objectives": [{"name": "y", "direction": "maximize", "unit": ""}],
    "workflow": [
        {"kind": "furnace", "action": "anneal", "fixed": {"ramp": 5}},
        {"kind": "meter", "action": "measure", "parameters": ["temperature_c"]},
    ],
    "instruments": [
        {"name": "f1", "kind": "furnace", "address": "tcp://127.0.0.1:5601", "timeout_s": 10.0},
        {
            "name": "m1",
            "kind": "meter",
            "simulated": {"world": "branin", "noise_std": 0.1, "duration_s": 0.0},
        },
    ],
    "planner": {"name": "random", "options": {}, "prefetch": 1},
    "budget": {"max_experiments": 5, "max_failures": 2},
    "safety": {"require_approval": False},
}

FREE_FORM = re.compile(r"(^|\.)(options|fixed)$")
"""Tables whose keys are not part of the schema (any key is allowed there)."""


# --------------------------------------------------------------------------- TOML writer


def _key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else _string(k)


def _string(s: str) -> str:
    out = json.dumps(s, ensure_ascii=False)  # escapes quotes, backslashes, control chars
    return out.replace("\x7f", "\\u007f")


def toml_value(v: Any) -> str:
    """``v`` as an inline TOML value."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return {"inf": "inf", "-inf": "-inf", "nan": "nan"}.get(repr(v), repr(v))
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def to_toml(doc: dict[str, Any]) -> str:
    return "".join(f"{_key(k)} = {toml_value(v)}\n" for k, v in doc.items())


# --------------------------------------------------------------------------- key paths


def key_paths(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            q = k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k, ensure_ascii=False)
            p = f"{prefix}.{q}" if prefix else q
            yield p
            yield from key_paths(v, p)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            p = f"{prefix}[{i}]"
            yield p
            yield from key_paths(v, p)


def split(path: str) -> list[str | int]:
    parts: list[str | int] = []
    for quoted, name, index in re.findall(r'("(?:[^"\\]|\\.)*")|([^."\[\]]+)|\[(\d+)\]', path):
        if quoted:
            parts.append(json.loads(quoted))
        else:
            parts.append(int(index) if index else name)
    return parts


def parent_and_leaf(doc: Any, path: str) -> tuple[Any, str | int]:
    """The node that holds ``path``'s last segment, and that segment."""
    parts = split(path)
    node = doc
    for part in parts[:-1]:
        node = node[part]
    return node, parts[-1]


def points_into(doc: dict[str, Any], path: str) -> bool:
    """Whether ``path`` names an existing key, or a key missing from an existing table."""
    if not path:
        return True
    try:
        node, leaf = parent_and_leaf(doc, path)
    except (KeyError, IndexError, TypeError):
        return False
    if isinstance(leaf, int):
        return isinstance(node, list) and leaf < len(node)
    return isinstance(node, dict)


# --------------------------------------------------------------------------- strategies

names = st.sampled_from(["", "x" * 200, "has space", "1starts_with_digit", "ok_name", "a.b"])
scalars = (
    st.integers()
    | st.integers(min_value=2**63, max_value=2**200)
    | st.integers(max_value=-(2**63), min_value=-(2**200))
    | st.floats()
    | st.text(max_size=20)
    | names
    | st.booleans()
    | st.datetimes()
    | st.dates()
    | st.times()
)
values = st.recursive(
    scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(min_size=1, max_size=8), c),
    max_leaves=8,
)
ALL_PATHS = sorted(key_paths(VALID))


@st.composite
def broken_specs(draw: st.DrawFn) -> tuple[dict[str, Any], str, str]:
    """The valid campaign with one to three mutations.

    Returns:
        The document, the operation (``"several"`` after more than one) and the last path.
    """
    doc = copy.deepcopy(VALID)
    op, path = "", ""
    n = draw(st.integers(min_value=1, max_value=3))
    for _ in range(n):
        paths = sorted(key_paths(doc))
        path = draw(st.sampled_from(paths))
        node, leaf = parent_and_leaf(doc, path)
        op = draw(st.sampled_from(["delete", "replace", "unknown"]))
        if op == "delete":
            del node[leaf]
        elif op == "replace":
            node[leaf] = draw(values)
        else:
            target = node[leaf]
            if not isinstance(target, dict) or FREE_FORM.search(path):
                op = "replace"
                node[leaf] = draw(values)
            else:
                extra = draw(st.sampled_from(["colour", "Lower", "max_experiment", "x y"]))
                target[extra] = draw(values)
                path = f"{path}.{json.dumps(extra) if ' ' in extra else extra}"
    return doc, op if n == 1 else "several", path


def check_error(exc: InvalidCampaignError, doc: dict[str, Any], op: str, path: str) -> None:
    assert exc.problems, "an error without problems"
    for key, message in ((p.key, p.message) for p in exc.problems):
        assert message
        assert points_into(doc, key), f"{key!r} does not point into the file ({message})"
        if key:
            assert key in str(exc)
    if op == "unknown":
        assert path in exc.key_paths(), exc.problems


def load_error(file: Path) -> InvalidCampaignError | None:
    """The error loading ``file`` raises, or ``None`` if it loads (any other exception
    propagates and fails the test)."""
    try:
        load_campaign(file)
    except InvalidCampaignError as exc:
        return exc
    return None


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def test_the_valid_campaign_loads(workdir: Path) -> None:
    path = workdir / "valid.toml"
    path.write_text(to_toml(VALID))
    assert load_campaign(path) == CampaignSpec.model_validate(VALID)


@FUZZ
@given(case=broken_specs())
def test_invalid_specs_give_invalid_campaign_errors_naming_real_key_paths(
    workdir: Path, case: tuple[dict[str, Any], str, str]
) -> None:
    doc, op, path = case
    file = workdir / "spec.toml"
    file.write_text(to_toml(doc), encoding="utf-8")
    COUNTS["spec.inputs"] += 1
    error = load_error(file)
    if error is None:
        COUNTS["spec.valid"] += 1
        assert op != "unknown", f"unknown key {path} was accepted"
    else:
        COUNTS["spec.refused"] += 1
        check_error(error, doc, op, path)
        assert str(file) in str(error)


def _mangle(text: str, data: st.DataObject) -> str:
    at = data.draw(st.integers(min_value=0, max_value=len(text)))
    cut = data.draw(st.integers(min_value=0, max_value=5))
    junk = data.draw(st.sampled_from(["", "[", "]]", "=", '"', "\n[[", "{", "\\", "\x00", "é"]))
    return text[:at] + junk + text[at + cut :]


@FUZZ
@given(data=st.data())
def test_malformed_toml_gives_an_invalid_campaign_error(workdir: Path, data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(["text", "mangled", "bytes", "nested"]))
    file = workdir / "bad.toml"
    if kind == "bytes":
        file.write_bytes(data.draw(st.binary(max_size=200)))
    elif kind == "nested":
        depth = data.draw(st.integers(min_value=1, max_value=5000))
        file.write_text("a = " + "[" * depth + "]" * depth + "\n")
    elif kind == "text":
        file.write_text(data.draw(st.text(max_size=200)), encoding="utf-8")
    else:
        file.write_text(_mangle(to_toml(VALID), data), encoding="utf-8")
    COUNTS["toml.inputs"] += 1
    error = load_error(file)  # a mangled file may still be a valid campaign
    if error is None:
        COUNTS["toml.valid"] += 1
    else:
        COUNTS["toml.refused"] += 1
        assert str(file) in str(error)
        for key, message in ((p.key, p.message) for p in error.problems):
            assert message
            assert not key or key in str(error)


def test_union_members_never_appear_in_key_paths() -> None:
    doc = copy.deepcopy(VALID)
    doc["workflow"][0]["fixed"] = {"ramp": [1, 2]}
    with pytest.raises(InvalidCampaignError) as info:
        parse_spec(doc, CampaignSpec, "f.toml")
    assert info.value.key_paths() == ["workflow[0].fixed.ramp"]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("workflow[0].fixed.ramp", float("nan")),
        ("workflow[0].fixed.ramp", float("inf")),
        ("instruments[1].simulated.noise_std", float("inf")),
        ("instruments[1].simulated.duration_s", float("inf")),
        ("instruments[0].timeout_s", float("inf")),
        ("campaign.seed", 2**64),
        ("instruments[1].simulated.seed", -1),
    ],
)
def test_out_of_range_numbers_are_refused(path: str, value: object) -> None:
    doc = copy.deepcopy(VALID)
    node, leaf = parent_and_leaf(doc, path)
    node[leaf] = value
    with pytest.raises(InvalidCampaignError) as info:
        parse_spec(doc, CampaignSpec, "f.toml")
    assert info.value.key_paths() == [path]


@pytest.fixture(scope="module", autouse=True)
def _record_counts() -> Iterator[None]:
    """After the module's tests: record the figures docs/reliability.md quotes (see
    ``benchmarks/reliability.py``); the tests above assert what the figures count."""
    yield
    record_figures("campaign-fuzz", {k.replace(".", "_"): v for k, v in sorted(COUNTS.items())})
    print(
        f"\ncampaign fuzz: {COUNTS['spec.inputs']} mutated specs "
        f"({COUNTS['spec.refused']} refused, {COUNTS['spec.valid']} still valid), "
        f"{COUNTS['toml.inputs']} malformed files ({COUNTS['toml.refused']} refused, "
        f"{COUNTS['toml.valid']} still valid); no other exception"
    )
