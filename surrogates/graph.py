"""The neighbour graph of a crystal, as crystal-graph convolutional networks need it.

Xie and Grossman, "Crystal graph convolutional neural networks for an accurate and
interpretable prediction of material properties", PRL 120, 145301 (2018): every site is a
node; each site is joined to its ``max_neighbors`` nearest periodic images within
``cutoff`` (an edge per image, so small cells have several edges between the same two
sites), and the edge carries the distance. pymatgen's ``Structure.get_neighbor_list`` finds
the neighbours (a compiled periodic search).

Unlike CGCNN's reference code, neighbours tied with the last kept one (within ``tie_tol``)
are all kept, so which neighbours are kept never depends on the order of the sites: the
graph is invariant, up to node relabelling, to site permutation and translation, and each
site's neighbourhood (its multiset of neighbour elements and distances) is the same in any
supercell.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pymatgen.core import Structure

logger = logging.getLogger(__name__)

__all__ = ["CrystalGraph", "crystal_graph"]


@dataclass(frozen=True)
class CrystalGraph:
    """A crystal's neighbour graph.

    Attributes:
        atomic_numbers: ``n`` atomic numbers of the sites.
        src: ``E`` centre-site index of each edge.
        dst: ``E`` neighbour-site index of each edge (the image's site).
        distances: ``E`` edge lengths (angstrom).
    """

    atomic_numbers: NDArray[np.int64]
    src: NDArray[np.int64]
    dst: NDArray[np.int64]
    distances: NDArray[np.float64]

    @property
    def n_sites(self) -> int:
        """Number of nodes."""
        return int(self.atomic_numbers.shape[0])

    def neighbourhoods(self, decimals: int = 4) -> list[tuple[int, tuple[tuple[int, float], ...]]]:
        """Each site's element and sorted ``(neighbour element, distance)`` list, sorted.

        A canonical form: equal for graphs that differ only in the order of their nodes.
        """
        out = []
        for i in range(self.n_sites):
            mask = self.src == i
            pairs = sorted(
                zip(
                    self.atomic_numbers[self.dst[mask]].tolist(),
                    np.round(self.distances[mask], decimals).tolist(),
                    strict=True,
                )
            )
            out.append((int(self.atomic_numbers[i]), tuple(pairs)))
        return sorted(out)


def crystal_graph(
    structure: Structure, cutoff: float = 8.0, max_neighbors: int = 12, tie_tol: float = 1e-3
) -> CrystalGraph:
    """Build the neighbour graph of a structure.

    Args:
        structure: The crystal (ordered; a disordered site's first species is used).
        cutoff: Neighbour search radius (angstrom).
        max_neighbors: Neighbours kept per site (plus any tied with the last kept one).
        tie_tol: Distance tolerance of a tie (angstrom).

    Returns:
        The graph.

    Raises:
        ValueError: If an option is out of range or the structure has no sites.
    """
    if cutoff <= 0 or max_neighbors < 1 or tie_tol < 0:
        raise ValueError("cutoff and tie_tol must be positive and max_neighbors at least 1")
    if len(structure) == 0:
        raise ValueError("a crystal graph needs at least one site")
    z = np.array([site.species.elements[0].Z for site in structure], dtype=np.int64)
    centres, neighbours, _, dists = structure.get_neighbor_list(r=cutoff)
    order = np.lexsort((dists, centres))
    centres, neighbours, dists = centres[order], neighbours[order], dists[order]
    keep = np.zeros(centres.shape[0], dtype=bool)
    starts = np.searchsorted(centres, np.arange(len(structure)))
    ends = np.searchsorted(centres, np.arange(len(structure)), side="right")
    for start, end in zip(starts, ends, strict=True):
        if end == start:
            continue
        k = min(max_neighbors, end - start)
        limit = dists[start + k - 1] + tie_tol
        keep[start:end] = dists[start:end] <= limit
    if not np.all(ends > starts):
        logger.debug("crystal graph: some sites have no neighbour within %.2f A", cutoff)
    return CrystalGraph(
        atomic_numbers=z,
        src=centres[keep].astype(np.int64),
        dst=neighbours[keep].astype(np.int64),
        distances=dists[keep].astype(np.float64),
    )
