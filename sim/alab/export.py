"""Write the ``alab`` world's computed thermodynamic data as a JSON file.

A-Lab ranks recipes with computed data (Materials Project entries); a simulated A-Lab's
planner gets the same kind of data from the simulated world: every phase's CHGNet energy
per atom and structure, elements included, so that a pymatgen ``PhaseDiagram`` can be
built from it. The file::

    {"source": "...", "energy_unit": "eV/atom",
     "entries": [{"formula": "SrTiO3", "energy_per_atom": -8.37, "structure": {...}}, ...]}

Run ``python -m sim.alab.export [--cache-dir DIR] [--out FILE]`` (defaults: the committed
cache in ``examples/data/alab`` and ``examples/data/alab/thermo.json``).

References:
    Szymanski, N. J. et al. (2023). An autonomous laboratory for the accelerated synthesis
    of novel materials. Nature 624, 86-91.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from sim.alab.world import DEFAULT_CACHE_DIR, AlabWorld
from sim.materials.energy import CHGNET_VERSION

logger = logging.getLogger(__name__)

__all__ = ["main", "thermo_document", "write_thermo"]


def thermo_document(world: AlabWorld) -> dict[str, Any]:
    """The thermo file's content for a world (see the module docstring)."""
    return {
        "source": (
            f"sdlab alab world: CHGNet {CHGNET_VERSION} static energies "
            f"({world.energy.settings}) of AFLOW-prototype structures"
        ),
        "energy_unit": "eV/atom",
        "entries": world.thermo_entries(),
    }


def write_thermo(world: AlabWorld, path: str | Path) -> Path:
    """Write the thermo file of ``world`` to ``path`` (parents created).

    Returns:
        The path written.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(thermo_document(world), indent=1) + "\n", encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: write the thermo file (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m sim.alab.export", description=__doc__)
    parser.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR)
    parser.add_argument("--out", default=f"{DEFAULT_CACHE_DIR}/thermo.json")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    world = AlabWorld(cache_dir=args.cache_dir, seed=args.seed)
    path = write_thermo(world, args.out)
    print(f"wrote {len(world.thermo_entries())} entries to {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
