"""``sdlab run`` on broken campaign files: always exit code 2, a key path, no traceback.

Hypothesis writes malformed TOML and invalid specs (the mutations of
``tests/models/test_campaign_fuzz.py``, plus random planner options that only the planner's
constructor can judge) and runs them through the real command line with click's CliRunner
and a temporary database, which must stay unwritten.
"""

from __future__ import annotations

import copy
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from controller.cli import cli
from controller.runner import validate
from models.errors import InvalidCampaignError
from tests.integration.helpers import record_figures
from tests.models.test_campaign_fuzz import VALID, broken_specs, to_toml, values

COUNTS: Counter[str] = Counter()

FUZZ = settings(
    derandomize=True,  # the same inputs on every run: the figures quoted are reproducible
    max_examples=60,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def refused_by_validate(path: Path) -> bool:
    try:
        validate(path)
    except InvalidCampaignError:
        return True
    return False


def run_cli(workdir: Path, path: Path) -> None:
    db = workdir / "never.db"
    result = CliRunner().invoke(cli, ["run", str(path), "--db", f"sqlite:///{db}", "--no-progress"])
    COUNTS["inputs"] += 1
    if result.exit_code != 2 or "Traceback" in result.output:
        COUNTS["crashes"] += 1
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert "invalid campaign" in result.output
    assert str(path) in result.output
    assert not db.exists()


@FUZZ
@given(case=broken_specs())
def test_invalid_specs_exit_2_without_a_traceback(
    workdir: Path, case: tuple[dict[str, Any], str, str]
) -> None:
    doc, _, _ = case
    path = workdir / "campaign.toml"
    path.write_text(to_toml(doc), encoding="utf-8")
    assume(refused_by_validate(path))  # a mutation that left a valid campaign would run it
    run_cli(workdir, path)


@FUZZ
@given(
    planner=st.sampled_from(["random", "sobol", "qlognei", "no-such-planner"]),
    options=st.dictionaries(
        st.sampled_from(["initial_points", "batch_size", "raw_samples", "num_restarts", "x"]),
        values,
        min_size=1,
        max_size=3,
    ),
)
def test_bad_planner_settings_exit_2_without_a_traceback(
    workdir: Path, planner: str, options: dict[str, Any]
) -> None:
    doc = copy.deepcopy(VALID)
    doc["planner"] = {"name": planner, "options": options}
    path = workdir / "planner.toml"
    path.write_text(to_toml(doc), encoding="utf-8")
    assume(refused_by_validate(path))
    run_cli(workdir, path)


@FUZZ
@given(text=st.text(max_size=300) | st.binary(max_size=300))
def test_malformed_files_exit_2_without_a_traceback(workdir: Path, text: str | bytes) -> None:
    path = workdir / "garbage.toml"
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    run_cli(workdir, path)


def test_unreadable_curve_key_files_exit_2_naming_the_key(workdir: Path) -> None:
    doc = copy.deepcopy(VALID)
    doc["instruments"][0]["address"] = "tcp://192.168.1.20:5601"
    doc["instruments"][0]["curve"] = {
        "server_public_key": "keys/f1.key",
        "client_keys": "keys/controller.key_secret",
    }
    path = workdir / "curve.toml"
    path.write_text(to_toml(doc), encoding="utf-8")
    db = workdir / "never.db"
    result = CliRunner().invoke(cli, ["run", str(path), "--db", f"sqlite:///{db}", "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "instruments[0].curve.client_keys" in result.output
    assert str(workdir / "keys" / "controller.key_secret") in result.output
    assert "Traceback" not in result.output
    assert not db.exists()


@pytest.fixture(scope="module", autouse=True)
def _record_counts() -> Iterator[None]:
    """After the module's tests: record the figures docs/reliability.md quotes (see
    ``benchmarks/reliability.py``); the tests above assert what the figures count."""
    yield
    record_figures("cli-fuzz", {"broken_files": COUNTS["inputs"], "crashes": COUNTS["crashes"]})
    print(f"\nsdlab run fuzz: {COUNTS['inputs']} broken files, {COUNTS['crashes']} crashes")
