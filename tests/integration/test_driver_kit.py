"""The driver kit end to end: ``sdlab driver new`` writes a package, pip installs it into
the environment, ``sdlab drivers list`` shows it, its own tests pass, and a campaign runs on
it (the driver on its simulated backend, behind a real gateway, driven by the controller).
The package is uninstalled at the end, whatever happens."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from controller.cli import cli
from models.status import ExperimentStatus
from tests.integration.helpers import experiments

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _run(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_a_generated_driver_package_installs_lists_and_runs_a_campaign(tmp_path: Path) -> None:
    name = f"kit-plate-{uuid.uuid4().hex[:6]}"
    module = name.replace("-", "_")
    pkg = tmp_path / name
    result = CliRunner().invoke(cli, ["driver", "new", name, str(pkg)])
    assert result.exit_code == 0, result.output
    assert (pkg / "pyproject.toml").exists()
    assert (pkg / module / "driver.py").exists()
    assert (pkg / module / "simulated.py").exists()
    assert (pkg / "tests" / "test_driver.py").exists()

    # the kit refuses to overwrite, and refuses names that cannot be a package
    again = CliRunner().invoke(cli, ["driver", "new", name, str(pkg)])
    assert again.exit_code == 2
    assert "not empty" in again.output
    bad = CliRunner().invoke(cli, ["driver", "new", "Bad_Name", str(tmp_path / "x")])
    assert bad.exit_code == 2
    assert "NAME 'Bad_Name'" in bad.output

    pip = [sys.executable, "-m", "pip"]
    install = _run(
        *pip, "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(pkg), cwd=tmp_path
    )
    assert install.returncode == 0, install.stdout + install.stderr
    try:
        listing = _run(sys.executable, "-m", "controller.cli", "drivers", "list", cwd=tmp_path)
        assert listing.returncode == 0, listing.stderr
        [line] = [ln for ln in listing.stdout.splitlines() if ln.startswith(name + " ")]
        cells = line.split()
        assert cells[1] == name  # the distribution it came from
        assert cells[3] == "yes"  # it has a simulated backend
        assert line.rstrip().endswith("set_and_measure, measure")

        own_tests = _run(
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            "not slow",
            "tests",
            cwd=pkg,
        )
        assert own_tests.returncode == 0, own_tests.stdout + own_tests.stderr
        assert "3 passed" in own_tests.stdout

        db = f"sqlite:///{tmp_path / 'kit.db'}"
        run = _run(
            sys.executable,
            "-m",
            "controller.cli",
            "run",
            "campaign.toml",
            "--db",
            db,
            "--no-progress",
            cwd=pkg,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        done = experiments(db)
        assert [e["status"] for e in done] == [ExperimentStatus.COMPLETED] * 3
        for e in done:  # the driver settled on each setpoint the planner chose
            assert e["measurements"]["value"] == pytest.approx(e["parameters"]["setpoint"], abs=0.5)
    finally:
        uninstall = _run(*pip, "uninstall", "-y", "-q", name, cwd=tmp_path)
        assert uninstall.returncode == 0, uninstall.stderr
