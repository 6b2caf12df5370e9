"""Entry points import only what they use: a gateway or simulated server starts in a
fraction of a second of CPU, not the seconds that torch, BoTorch, pymatgen and Ray cost."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "botorch", "pymatgen", "matplotlib", "ray", "sqlalchemy", "alembic", "fastapi")

CASES = {
    # every ``sdlab`` command (``sdlab instruments serve`` is the gateway of a lab PC)
    "import controller.cli": set(),
    # the simulated servers of a campaign, as ``sdlab run`` starts them
    "import sim.serve": set(),
    # a gateway hosting a Branin station: its driver and world built
    (
        "from sim.serve import build_drivers\n"
        "from models.instrument_spec import InstrumentSpec\n"
        "build_drivers([InstrumentSpec.model_validate({'name': 's', 'kind': 'station', "
        "'simulated': {'world': 'branin'}})])"
    ): set(),
    # the A-Lab world needs pymatgen (and what it imports), not torch or Ray
    ("from sim.worlds import get_world\nget_world('alab')"): {"pymatgen", "matplotlib"},
}


@pytest.mark.parametrize(("code", "needs"), list(CASES.items()), ids=list(range(len(CASES))))
def test_an_entry_point_imports_only_what_it_uses(code: str, needs: set[str]) -> None:
    probe = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=300
    )
    loaded = set(json.loads(out.stdout.splitlines()[-1]))
    assert {m for m in HEAVY if m in loaded} <= needs
