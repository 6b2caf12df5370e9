"""A CHGNet-labelled structure set from the simulated Sr-Ti-O lab, for the surrogate benchmark.

The simulated materials lab (:mod:`sim.materials`) knows 82 Sr-Ti-O materials (references
and candidates; their structures are in ``examples/data/discovery-cache``). Labels that vary
only with a material and its cell volume give a crystal-graph network little to learn, so this
set perturbs each material's structure the way a structure-energy data set does (strained and
rattled snapshots, as in the training sets of universal interatomic potentials, e.g. Deng et
al., "CHGNet as a pretrained universal neural network potential for charge-informed atomistic
modelling", Nat. Mach. Intell. 5, 1031 (2023)):

* an isotropic volume change (volume factor uniform in ``[0.88, 1.12]``);
* a random symmetric strain (entries uniform in ``[-0.04, 0.04]``) on the lattice;
* a rattle of every site (Gaussian, ``sigma`` uniform in ``[0, 0.06]`` angstrom per axis).

The label is CHGNet's static energy (eV/atom, the same pretrained model as the simulated lab,
:class:`sim.materials.energy.StructureEnergy`). Grouping by material keeps a material's
snapshots in one fold, so cross-validation tests on unseen materials.

Stored compactly in ``benchmarks/data/chgnet-srtio.json.gz``: per structure its material,
lattice (3 x 3, angstrom), species, fractional coordinates and energy. Regenerate with
``python -m benchmarks.chgnet_dataset --per-material 20`` (about two minutes on one CPU core).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import numpy as np  # noqa: E402

DATA_FILE = _HERE / "data" / "chgnet-srtio.json.gz"
"""The committed set (regenerable with this script)."""

SOURCE = _HERE.parent / "examples" / "data" / "discovery-cache" / "chgnet-energies.sqlite"
"""The simulated lab's structures (each material at the volumes of its scan)."""


def base_structures() -> list[Any]:
    """One structure per material of the simulated lab (the first of its volume scan)."""
    from pymatgen.core import Structure

    with sqlite3.connect(SOURCE) as db:
        rows = db.execute("SELECT structure FROM energies ORDER BY key").fetchall()
    seen: dict[str, Any] = {}
    for (text,) in rows:
        st = Structure.from_dict(json.loads(text))
        seen.setdefault(f"{st.composition.reduced_formula}/{len(st)}", st)
    return list(seen.values())


def perturb(structure: Any, rng: np.random.Generator) -> Any:
    """A strained and rattled copy of ``structure`` (see the module docstring)."""
    from pymatgen.core import Lattice, Structure

    strain = rng.uniform(-0.04, 0.04, (3, 3))
    strain = (strain + strain.T) / 2
    matrix = structure.lattice.matrix @ (np.eye(3) + strain)
    lattice = Lattice(matrix)
    factor = rng.uniform(0.88, 1.12)
    lattice = lattice.scale(structure.volume * factor)
    cart = structure.frac_coords @ lattice.matrix
    cart = cart + rng.normal(0.0, rng.uniform(0.0, 0.06), cart.shape)
    return Structure(lattice, structure.species, cart, coords_are_cartesian=True)


def generate(per_material: int, seed: int = 0, batch_size: int = 32) -> list[dict[str, Any]]:
    """Perturbed structures of every material and their CHGNet static energies (eV/atom)."""
    import torch

    from sim.materials.energy import StructureEnergy

    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    items: list[tuple[str, Any]] = []
    for st in base_structures():
        name = f"{st.composition.reduced_formula}/{len(st)}"
        items += [(name, perturb(st, rng)) for _ in range(per_material)]
    model = StructureEnergy(volume_scan=(1.0,)).model
    out: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        preds = model.predict_structure([s for _, s in chunk], task="e", batch_size=batch_size)
        if isinstance(preds, dict):
            preds = [preds]
        for (name, s), p in zip(chunk, preds, strict=True):
            out.append(
                {
                    "material": name,
                    "lattice": np.round(s.lattice.matrix, 6).tolist(),
                    "species": [str(sp) for sp in s.species],
                    "frac_coords": np.round(s.frac_coords, 6).tolist(),
                    "energy_per_atom": round(float(p["e"]), 6),
                }
            )
        print(f"{len(out)}/{len(items)} in {time.perf_counter() - t0:.0f}s", flush=True)
    return out


def load(path: Path = DATA_FILE) -> tuple[list[Any], np.ndarray, np.ndarray]:
    """Structures, CHGNet energies (eV/atom) and a material index per structure."""
    from pymatgen.core import Lattice, Structure

    with gzip.open(path, "rt") as fh:
        rows = json.load(fh)["structures"]
    structures = [Structure(Lattice(r["lattice"]), r["species"], r["frac_coords"]) for r in rows]
    y = np.array([r["energy_per_atom"] for r in rows])
    index = {k: i for i, k in enumerate(dict.fromkeys(r["material"] for r in rows))}
    return structures, y, np.array([index[r["material"]] for r in rows])


def main(argv: list[str] | None = None) -> int:
    """Generate the set and write it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-material", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(DATA_FILE))
    args = parser.parse_args(argv)
    rows = generate(args.per_material, args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    meta = {"per_material": args.per_material, "seed": args.seed, "model": "chgnet-0.3.0"}
    with gzip.open(args.out, "wt") as fh:
        json.dump({"meta": meta, "structures": rows}, fh, separators=(",", ":"))
    print(f"wrote {len(rows)} structures to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
