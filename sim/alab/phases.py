"""The phases of the ``alab`` world: crystal structures built from AFLOW prototypes.

Every phase is named by a text spec and built deterministically:

* ``"<AFLOW label>:<El>,<El>,..."``: an AFLOW prototype with its elements replaced and the
  volume predicted (:func:`models.materials.build_structure`);
* ``"K2NiF4:<A>,<B>"``: the K2NiF4 (Ruddlesden-Popper n = 1) structure of ``A2BO4``, the
  Wyckoff sites of the AFLOW prototype ``AB2C4_tI14_139_a_e_ce`` (B 2a, A 4e, O 4c + 4e)
  with ideal coordinates (``c/a = 3.25``, ``z_A = 0.355``, ``z_O = 0.16``) instead of
  La2CuO4's Jahn-Teller-distorted ones (which put every A2BO4 0.2-0.4 eV/atom above the
  hull), primitive cell, volume predicted.

Volumes come from pymatgen's bond-length volume predictor (Chu et al. 2018), as in
:mod:`models.materials`.

References:
    Mehl, M. J. et al. (2017). The AFLOW Library of Crystallographic Prototypes: Part 1.
    Computational Materials Science 136, S1-S828.
    Ruddlesden, S. N. and Popper, P. (1957). New compounds of the K2NiF4 type. Acta Cryst.
    10, 538-539.
"""

from __future__ import annotations

import functools
import logging

from pymatgen.core import Element, Lattice, Structure

from models.materials import build_structure

logger = logging.getLogger(__name__)

__all__ = ["build_phase"]

RP_C_OVER_A = 3.25
RP_Z_A = 0.355
RP_Z_O = 0.16


def _predicted(structure: Structure) -> Structure:
    from pymatgen.analysis.structure_prediction.volume_predictor import DLSVolumePredictor

    return DLSVolumePredictor().get_predicted_structure(structure)


def _elements(spec: str, rest: str, count: int) -> list[str]:
    names = rest.split(",")
    if len(names) != count or not all(Element.is_valid_symbol(n) for n in names):
        raise ValueError(f"phase {spec!r}: expected {count} element symbols")
    return names


@functools.lru_cache(maxsize=256)
def _built(spec: str) -> Structure:
    kind, sep, rest = spec.partition(":")
    if not sep:
        raise ValueError(f"phase {spec!r}: expected '<kind>:<El>,...'")
    if kind == "K2NiF4":
        a, b = _elements(spec, rest, 2)
        lattice = Lattice.tetragonal(4.0, 4.0 * RP_C_OVER_A)
        s = Structure.from_spacegroup(
            "I4/mmm",
            lattice,
            [b, a, "O", "O"],
            [[0, 0, 0], [0, 0, RP_Z_A], [0, 0.5, 0], [0, 0, RP_Z_O]],
        )
        return _predicted(s.get_primitive_structure())
    return build_structure(spec)


def build_phase(spec: str) -> Structure:
    """The structure of a phase spec (see the module docstring).

    Args:
        spec: An AFLOW material spec or ``"K2NiF4:<A>,<B>"``.

    Returns:
        A new structure (the caller may modify it).

    Raises:
        ValueError: If the spec is malformed.
    """
    return _built(spec).copy()
