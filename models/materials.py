"""Materials as parameter values: a prototype structure and the elements put into it.

A discovery campaign's experiment is a material. Planners generate candidate materials and
instruments make them, so both sides must agree on a text that names one material exactly
and lets anyone rebuild its structure deterministically. That text is a *material spec*::

    "<prototype label>:<element>,<element>,..."   e.g.  "AB3C_cP5_221_a_c_b:Sr,O,Ti"

The prototype label is an AFLOW prototype label from the library pymatgen ships
(``pymatgen/analysis/prototypes/aflow_prototypes.json.gz``, 288 structures of the AFLOW
Library of Crystallographic Prototypes; a label that appears twice gets ``#2``). The
elements replace the prototype's own elements in the order of the label's letters ``A, B,
C, ...``, which AFLOW assigns to the original elements in alphabetical order. The structure
is rebuilt with :func:`build_structure`: species replaced, then the cell scaled to the volume
pymatgen's bond-length volume predictor gives (``DLSVolumePredictor``), so the result
depends only on the spec and the pymatgen version.

References:
    Mehl, M. J. et al. (2017). The AFLOW Library of Crystallographic Prototypes: Part 1.
    Computational Materials Science 136, S1-S828.
    Chu, I.-H. et al. (2018). Predicting the volumes of crystals. Computational Materials
    Science 146, 184-192 (the data-mined bond-length volume predictor).
"""

from __future__ import annotations

import functools
import gzip
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymatgen.core import Composition, Element, Structure

logger = logging.getLogger(__name__)

__all__ = [
    "MATERIAL_PATTERN",
    "MaterialSpec",
    "Prototype",
    "build_structure",
    "parse_material",
    "prototype_library",
]

MATERIAL_PATTERN = r"[A-Za-z0-9_#\-]+:[A-Z][a-z]?(,[A-Z][a-z]?)*"
"""Regular expression of a material spec (use it as a string parameter's ``pattern``)."""

MAX_PROTOTYPE_SITES = 24
"""Prototypes with more sites than this are left out of the library (too slow to screen)."""


@dataclass(frozen=True, eq=False)
class Prototype:
    """One AFLOW prototype structure.

    Attributes:
        label: AFLOW label (``#k`` appended to the k-th repeat of a label).
        mineral: Mineral or compound name the library gives (may be empty).
        species: The original elements in label order (alphabetical).
        counts: Number of sites of each of ``species``, same order.
        data: The structure's ``as_dict`` form (built into a structure on first use).
    """

    label: str
    mineral: str
    species: tuple[str, ...]
    counts: tuple[int, ...]
    data: dict[str, Any] = field(repr=False)

    @functools.cached_property
    def structure(self) -> Structure:
        """The prototype's own structure (with its original elements); do not modify."""
        return Structure.from_dict(self.data)

    @property
    def n_sites(self) -> int:
        """Sites in the prototype's cell."""
        return sum(self.counts)

    @property
    def formula(self) -> str:
        """Reduced formula of the original compound (e.g. ``"NaCl"``)."""
        return Composition(dict(zip(self.species, self.counts, strict=True))).reduced_formula


@functools.lru_cache(maxsize=1)
def prototype_library() -> dict[str, Prototype]:
    """Every ordered AFLOW prototype of at most :data:`MAX_PROTOTYPE_SITES` sites, by label.

    Structures are read lazily (decoding all 288 takes seconds).

    Returns:
        The prototypes, in the order of pymatgen's file.
    """
    import pymatgen.core

    root = Path(pymatgen.core.__file__).parent.parent
    path = root / "analysis" / "prototypes" / "aflow_prototypes.json.gz"
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        raw = json.load(fh)
    out: dict[str, Prototype] = {}
    seen: dict[str, int] = {}
    for entry in raw:
        data = entry["snl"]
        tags = entry.get("tags", {})
        base = str(tags.get("aflow", ""))
        seen[base] = seen.get(base, 0) + 1
        label = base if seen[base] == 1 else f"{base}#{seen[base]}"
        sites = data["sites"]
        if not base or len(sites) > MAX_PROTOTYPE_SITES:
            continue
        if any(len(site["species"]) != 1 or site["species"][0]["occu"] != 1 for site in sites):
            continue  # disordered
        counts: dict[str, int] = {}
        for site in sites:
            el = site["species"][0]["element"]
            counts[el] = counts.get(el, 0) + 1
        species = tuple(sorted(counts))
        structure_data = {
            "@module": "pymatgen.core.structure",
            "@class": "Structure",
            "lattice": data["lattice"],
            "sites": sites,
            "charge": data.get("charge", 0),
        }
        out[label] = Prototype(
            label,
            str(tags.get("mineral", "")),
            species,
            tuple(counts[s] for s in species),
            structure_data,
        )
    return out


@dataclass(frozen=True)
class MaterialSpec:
    """A prototype label and the elements substituted into it (see the module docstring).

    Attributes:
        prototype: The prototype's label in :func:`prototype_library`.
        elements: One element symbol per prototype species, in label order.
    """

    prototype: str
    elements: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.prototype}:{','.join(self.elements)}"

    @property
    def composition(self) -> Composition:
        """The composition of one cell of the material."""
        proto = prototype_library()[self.prototype]
        amounts: dict[str, float] = {}
        for el, n in zip(self.elements, proto.counts, strict=True):
            amounts[el] = amounts.get(el, 0.0) + n
        return Composition(amounts)

    @property
    def formula(self) -> str:
        """Reduced formula (e.g. ``"SrTiO3"``)."""
        return self.composition.reduced_formula


def parse_material(text: str) -> MaterialSpec:
    """Parse a material spec.

    Args:
        text: ``"<prototype label>:<El>,<El>,..."``.

    Returns:
        The spec.

    Raises:
        ValueError: If the text is malformed, the prototype is unknown, an element symbol is
            not an element, or the number of elements differs from the prototype's.
    """
    if not isinstance(text, str) or re.fullmatch(MATERIAL_PATTERN, text) is None:
        raise ValueError(f"material {text!r}: expected '<prototype label>:<El>,<El>,...'")
    label, _, rest = text.partition(":")
    library = prototype_library()
    if label not in library:
        raise ValueError(f"material {text!r}: unknown prototype {label!r}")
    elements = tuple(rest.split(","))
    for el in elements:
        if not Element.is_valid_symbol(el):
            raise ValueError(f"material {text!r}: {el!r} is not an element")
    if len(set(elements)) != len(elements):
        raise ValueError(f"material {text!r}: an element is given twice")
    want = len(library[label].species)
    if len(elements) != want:
        raise ValueError(f"material {text!r}: prototype {label} needs {want} elements")
    return MaterialSpec(label, elements)


@functools.lru_cache(maxsize=4096)
def _built(spec: MaterialSpec) -> Structure:
    from pymatgen.analysis.structure_prediction.volume_predictor import DLSVolumePredictor

    proto = prototype_library()[spec.prototype]
    structure = proto.structure.copy()
    structure.replace_species(dict(zip(proto.species, spec.elements, strict=True)))
    try:
        return DLSVolumePredictor().get_predicted_structure(structure)
    except (ValueError, KeyError) as exc:  # no bond-length data for an element
        logger.debug("no volume prediction for %s (%s); prototype volume kept", spec, exc)
        return structure


def build_structure(spec: MaterialSpec | str) -> Structure:
    """The structure of a material: prototype, species replaced, volume predicted.

    Args:
        spec: A spec or its text.

    Returns:
        A new structure (the caller may modify it).

    Raises:
        ValueError: If the text is not a valid spec.
    """
    parsed = parse_material(spec) if isinstance(spec, str) else spec
    return _built(parsed).copy()
