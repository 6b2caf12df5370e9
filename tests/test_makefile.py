"""Every Makefile target's entry point imports the way the target runs it.

``make bench`` once ran ``python benchmarks/controller_overhead.py``, which put
``benchmarks/`` first on the import path, so ``benchmarks/planners.py`` shadowed the
``planners`` package and the target died on its first import. These tests read the Makefile,
and for each ``$(BIN)/python -m MODULE``, ``$(BIN)/python FILE.py`` and ``$(BIN)/sdlab``
command import it in a fresh interpreter with the import path that command would have.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["models", "instruments", "sim", "surrogates", "planners", "controller"]


def _commands() -> list[tuple[str, str]]:
    """(target, command) for every recipe line that runs our Python or the ``sdlab`` script."""
    found: list[tuple[str, str]] = []
    target = ""
    for line in (ROOT / "Makefile").read_text(encoding="utf-8").splitlines():
        head = re.match(r"^([A-Za-z][\w-]*):", line)
        if head:
            target = head.group(1)
        elif line.startswith("\t") and re.search(r"\$\(BIN\)/(python|sdlab)\b", line):
            found.append((target, line.strip()))
    return found


def _entry_points() -> list[tuple[str, str, str]]:
    """(target, kind, what): ``module``, ``script`` or ``sdlab`` entry points to import."""
    points: list[tuple[str, str, str]] = []
    for target, cmd in _commands():
        module = re.search(r"\$\(BIN\)/python -m ([\w.]+)", cmd)
        script = re.search(r"\$\(BIN\)/python ([\w/.-]+\.py)\b", cmd)
        if module and module.group(1) != "pip":
            points.append((target, "module", module.group(1)))
        elif script:
            points.append((target, "script", script.group(1)))
        elif re.search(r"\$\(BIN\)/sdlab\b", cmd):
            points.append((target, "sdlab", cmd))
    return points


def test_the_makefile_has_the_entry_points_the_readme_names() -> None:
    targets = {t for t, _, _ in _entry_points()}
    assert {"demo", "bench", "bench-planners"} <= targets


@pytest.mark.parametrize(("target", "kind", "what"), _entry_points())
def test_each_target_entry_point_imports(target: str, kind: str, what: str) -> None:
    if kind == "module":
        # python -m puts the working directory (the repository root) first on the path
        code = f"import importlib; importlib.import_module({what!r})"
    elif kind == "script":
        # python FILE.py puts the file's own folder first: load it exactly that way, with
        # __name__ other than "__main__" so that its top level runs but not its main()
        folder = str((ROOT / what).parent)
        code = (
            "import importlib.util, sys\n"
            f"sys.path[0] = {folder!r}\n"
            f"spec = importlib.util.spec_from_file_location('entry', {str(ROOT / what)!r})\n"
            "module = importlib.util.module_from_spec(spec)\n"
            "spec.loader.exec_module(module)\n"
        )
    else:
        # the command's campaign files must load as well as the command line itself
        files = re.findall(r"(\S+\.toml)\b", what)
        code = "from controller.cli import main\nfrom models.campaign_file import load_campaign\n"
        code += "".join(f"load_campaign({f!r})\n" for f in files)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"make {target}: {what}\n{result.stderr[-3000:]}"


def test_no_benchmark_or_example_module_shadows_a_package() -> None:
    for folder in ("benchmarks", "examples", "tests"):
        names = {p.stem for p in (ROOT / folder).rglob("*.py")}
        assert not names & set(PACKAGES), f"{folder}/ has a module named like a package"
