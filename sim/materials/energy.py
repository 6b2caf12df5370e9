"""The hidden truth's energies: CHGNet, static or briefly relaxed, cached on disk.

CHGNet (Deng et al. 2023) is a universal machine-learned interatomic potential trained on
the Materials Project's relaxation trajectories; its pretrained weights ship inside the
``chgnet`` wheel, so nothing is downloaded. Nobody in this project fitted it, which makes it
an honest hidden ground truth for a simulated materials lab.

Two ways of computing a structure's energy (``mode``):

* ``"static"``: single-point energies of the structure isotropically scaled to each factor
  of ``volume_scan`` (a one-dimensional relaxation of the volume the structure was built
  with); the lowest one counts. About 40-70 ms per small structure and scan point once the
  model is loaded.
* ``"relax"``: the best static point, then ``relax_steps`` FIRE steps of CHGNet's
  ``StructOptimizer`` (positions and cell). Seconds per structure.

Every result is kept in an SQLite file (``<cache_dir>/chgnet-energies.sqlite``) keyed by a
hash of the structure (lattice, species, fractional coordinates rounded to 1e-6), the mode
and its settings, and the model version; several instrument processes may share one file.
Without a ``cache_dir`` the cache lives in memory only.

References:
    Deng, B. et al. (2023). CHGNet as a pretrained universal neural network potential for
    charge-informed atomistic modelling. Nature Machine Intelligence 5, 1031-1041.
    Bitzek, E. et al. (2006). Structural relaxation made simple. Phys. Rev. Lett. 97,
    170201 (FIRE).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sqlite3
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pymatgen.core import Structure

logger = logging.getLogger(__name__)

__all__ = ["CHGNET_VERSION", "EnergyCache", "EnergyResult", "StructureEnergy"]

CHGNET_VERSION = "0.3.0"
"""The pretrained CHGNet model used (its weights are files of the installed wheel)."""

DEFAULT_SCAN = (0.88, 0.94, 1.0, 1.06, 1.12)
"""Default volume factors of the static mode's scan."""


@dataclass(frozen=True)
class EnergyResult:
    """The energy of one structure.

    Attributes:
        energy_per_atom: CHGNet total energy per atom, in eV/atom.
        structure: The structure the energy belongs to (scaled or relaxed).
        cached: Whether the value came from the cache.
    """

    energy_per_atom: float
    structure: Structure
    cached: bool


def structure_key(structure: Structure, settings: str) -> str:
    """A stable hash of a structure and the settings of its evaluation."""
    lattice = [round(float(v), 6) for v in structure.lattice.matrix.flatten()]
    sites = sorted(
        (site.species_string, *(round(float(c) % 1.0, 6) % 1.0 for c in site.frac_coords))
        for site in structure
    )
    text = json.dumps([settings, lattice, sites])
    return hashlib.sha256(text.encode()).hexdigest()


class EnergyCache:
    """A key -> (energy, structure) store in an SQLite file, or in memory.

    Args:
        cache_dir: Directory of the cache file (created if missing); ``None``: memory only.
    """

    FILENAME = "chgnet-energies.sqlite"

    def __init__(self, cache_dir: str | Path | None) -> None:
        self._memory: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()
        self.path: Path | None = None
        if cache_dir is not None:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            self.path = Path(cache_dir) / self.FILENAME
            with self._connect() as db:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS energies "
                    "(key TEXT PRIMARY KEY, energy REAL NOT NULL, structure TEXT NOT NULL)"
                )

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        assert self.path is not None
        db = sqlite3.connect(self.path, timeout=60.0)
        try:
            with db:
                yield db
        finally:
            db.close()

    def get(self, key: str) -> tuple[float, Structure] | None:
        """The cached energy per atom and structure under ``key``, or ``None``."""
        with self._lock:
            hit = self._memory.get(key)
        if hit is None and self.path is not None:
            with self._connect() as db:
                row = db.execute(
                    "SELECT energy, structure FROM energies WHERE key = ?", (key,)
                ).fetchone()
            if row is not None:
                hit = (float(row[0]), str(row[1]))
                with self._lock:
                    self._memory[key] = hit
        if hit is None:
            return None
        return hit[0], Structure.from_dict(json.loads(hit[1]))

    def put(self, key: str, energy: float, structure: Structure) -> None:
        """Store a result (replacing any earlier one under ``key``)."""
        text = json.dumps(structure.as_dict())
        with self._lock:
            self._memory[key] = (energy, text)
        if self.path is not None:
            with self._connect() as db:
                db.execute(
                    "INSERT OR REPLACE INTO energies (key, energy, structure) VALUES (?, ?, ?)",
                    (key, energy, text),
                )

    def __len__(self) -> int:
        if self.path is None:
            return len(self._memory)
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM energies").fetchone()[0])


class StructureEnergy:
    """CHGNet energies of structures, static or briefly relaxed, with an on-disk cache.

    The model is loaded on first use (about a second), from the wheel's own files.

    Args:
        mode: ``"static"`` or ``"relax"`` (see the module docstring).
        volume_scan: Volume factors of the static scan (each > 0).
        relax_steps: FIRE steps of a ``"relax"`` evaluation.
        cache_dir: Directory of the SQLite cache; ``None`` keeps results in memory only.

    Raises:
        ValueError: If an option is out of range (naming it).
    """

    def __init__(
        self,
        *,
        mode: Literal["static", "relax"] = "static",
        volume_scan: Sequence[float] = DEFAULT_SCAN,
        relax_steps: int = 20,
        cache_dir: str | Path | None = None,
    ) -> None:
        if mode not in ("static", "relax"):
            raise ValueError(f"mode: expected 'static' or 'relax', got {mode!r}")
        scan = tuple(float(f) for f in volume_scan)
        if not scan or any(not 0.3 < f < 3.0 for f in scan):
            raise ValueError(f"volume_scan: expected factors in (0.3, 3), got {volume_scan!r}")
        if relax_steps < 1:
            raise ValueError(f"relax_steps: expected >= 1, got {relax_steps}")
        self.mode = mode
        self.volume_scan = scan
        self.relax_steps = relax_steps
        self.cache = EnergyCache(cache_dir)
        self._model: Any = None
        self._lock = threading.Lock()
        steps = f"/{relax_steps}" if mode == "relax" else ""
        self.settings = f"chgnet-{CHGNET_VERSION}/{mode}{steps}/{','.join(map(str, scan))}"
        self.evaluations = 0
        """Energies computed (cache misses) by this object."""

    @property
    def model(self) -> Any:
        """The CHGNet model, loaded from the installed wheel on first use."""
        with self._lock:
            if self._model is None:
                from chgnet.model import CHGNet

                self._model = CHGNet.load(
                    model_name=CHGNET_VERSION, use_device="cpu", verbose=False
                )
            return self._model

    def _static(self, structure: Structure) -> tuple[float, Structure]:
        best: tuple[float, Structure] | None = None
        base = structure.volume
        scaled = []
        for f in self.volume_scan:
            s = structure.copy()
            s.scale_lattice(base * f)
            scaled.append(s)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            preds = self.model.predict_structure(scaled, task="e", batch_size=len(scaled))
        if isinstance(preds, dict):  # CHGNet unwraps a batch of one
            preds = [preds]
        for s, p in zip(scaled, preds, strict=True):
            e = float(p["e"])
            if best is None or e < best[0]:
                best = (e, s)
        assert best is not None
        return best

    def _relax(self, structure: Structure) -> tuple[float, Structure]:
        from chgnet.model import StructOptimizer

        e0, start = self._static(structure)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt = StructOptimizer(model=self.model, optimizer_class="FIRE", use_device="cpu")
            out = opt.relax(start, steps=self.relax_steps, fmax=0.05, verbose=False)
        final = out["final_structure"]
        trajectory = out["trajectory"]
        assert isinstance(final, Structure)
        e = float(trajectory.energies[-1]) / len(final)  # type: ignore[union-attr]
        return (e, final) if e < e0 else (e0, start)

    def energy(self, structure: Structure) -> EnergyResult:
        """The energy per atom of a structure (cached).

        Args:
            structure: An ordered structure.

        Returns:
            Its energy, the structure it belongs to, and whether it was cached.
        """
        key = structure_key(structure, self.settings)
        hit = self.cache.get(key)
        if hit is not None:
            return EnergyResult(hit[0], hit[1], cached=True)
        e, final = self._relax(structure) if self.mode == "relax" else self._static(structure)
        self.evaluations += 1
        self.cache.put(key, e, final)
        logger.debug("CHGNet %s: %s %.4f eV/atom", self.mode, structure.formula, e)
        return EnergyResult(e, final, cached=False)
