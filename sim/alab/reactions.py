"""The hidden solid-state reaction model of the ``alab`` world: pairwise reactions in order.

After ARROWS3 (Szymanski et al. 2023) and the pairwise-reaction picture of solid-state
synthesis it builds on (Miura et al. 2021; Bianchini et al. 2020): in a powder mixture
phases react two at a time where they touch, the pair with the largest thermodynamic
driving force first, and what they form may consume so much of that driving force that the
target can no longer form (an inert intermediate). The model, step by step:

1. **Start.** The precursors, in balanced amounts per mole of target (O2 exchanged with the
   furnace atmosphere, :meth:`~sim.alab.world.AlabWorld.balance`), counted in atoms.
2. **Pair reactions.** For every pair of solid phases present (and every metastable phase
   on its own, which may decompose), the reaction is the one along the pair's tie line with
   the most negative reaction energy per atom: pymatgen's
   ``PhaseDiagram.get_critical_compositions`` gives the kinks of the tie line, the hull
   energy at each kink minus the reactants' own energies is the reaction energy, and the
   products are the hull's stable phases at that kink (``get_decomposition``). O2 among
   the products leaves as gas. This is the interface-reaction construction of Richards et
   al. (2016) that pymatgen's ``InterfacialReactivity`` implements.
3. **Onset (Tammann's rule).** A pair reacts only above its onset temperature, a hidden
   fraction (0.5 to 0.7, drawn per pair) of the lower melting point of the two phases.
   Melting points are *hidden per-phase numbers* drawn deterministically from the world's
   seed (1500-2500 K), not data.
4. **Kinetics.** At temperature ``T`` above the onset ``T_on`` a fraction
   ``(1 - exp(-(T - T_on) / tau)) (1 - exp(-|dE| / e0))`` of the limiting reactant reacts
   (``tau`` = 100 degC, ``e0`` = 20 meV/atom), so small driving forces and temperatures
   just above onset give partial reactions.
5. **Order.** Among the pairs that can react (present, above onset, reaction energy below
   ``-min_drive`` and not yet reacted in this heating), the most negative reaction energy
   goes first; then the list is rebuilt with the new phases. Each pair reacts at most once
   per heating, so the process ends.

What is left are the products; their weight fractions are the truth an XRD sees.

Limits: no diffusion lengths, particle sizes, dwell-time or heating-rate dependence, no
melting, no volatility, no reduction (the atmosphere only takes O2 away); all energies are
0 K CHGNet energies (no entropy).

References:
    Szymanski, N. J. et al. (2023). Autonomous and dynamic precursor selection for
    solid-state materials synthesis. Nature Communications 14, 6956 (ARROWS3).
    Miura, A. et al. (2021). Observing and modeling the sequential pairwise reactions that
    drive solid-state ceramic synthesis. Advanced Materials 33, 2100312.
    Bianchini, M. et al. (2020). The interplay between thermodynamics and kinetics in the
    solid-state synthesis of layered oxides. Nature Materials 19, 1088-1095.
    Richards, W. D. et al. (2016). Interface stability in solid-state batteries. Chemistry
    of Materials 28, 266-273.
    Tammann, G. (1926). Die chemischen und galvanischen Eigenschaften von Mischkristallreihen
    und ihre Atomverteilung. Z. Anorg. Allg. Chem. 107, 1-239.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from pymatgen.analysis.phase_diagram import PhaseDiagram
from pymatgen.core import Composition

from sim.noise import seed_from_name

logger = logging.getLogger(__name__)

__all__ = ["PairReaction", "ReactionModel", "ReactionStep"]

GAS = "O2"
"""The one gas: released to (or taken from) the furnace atmosphere."""

EPS_ATOMS = 1e-9
"""Amounts below this many atoms (per formula unit of target) count as absent."""


@dataclass(frozen=True)
class PairReaction:
    """The most favourable reaction of two phases (or the decomposition of one).

    Attributes:
        reactants: The two reduced formulas (the same twice for a decomposition).
        onset_c: Temperature above which it runs, degC.
        drive_ev_per_atom: Reaction energy per atom of reacting mixture, eV/atom (< 0 when
            it can run).
        ratio: Atom fraction of ``reactants[1]`` in the reacting mixture.
        products: Atoms of each product per atom of reacting mixture (O2 included).
    """

    reactants: tuple[str, str]
    onset_c: float
    drive_ev_per_atom: float
    ratio: float
    products: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class ReactionStep:
    """One pair reaction that happened during a heating.

    Attributes:
        reaction: The pair reaction.
        extent: Fraction of the limiting reactant that reacted.
        atoms: Atoms of reacting mixture consumed (per formula unit of target).
    """

    reaction: PairReaction
    extent: float
    atoms: float


def _uniform(seed: int, key: str, low: float, high: float) -> float:
    rng = np.random.default_rng(seed_from_name(f"alab/{seed}/{key}"))
    return float(rng.uniform(low, high))


class ReactionModel:
    """Sequential pairwise reactions over a phase diagram (see the module docstring).

    Args:
        hull: The phase diagram of the chemical system.
        energies: Energy per atom of each solid phase as a reactant, by reduced formula
            (eV/atom); phases above the hull may decompose.
        seed: Seed of the hidden melting points and Tammann fractions.
        tau_c: Temperature scale of the kinetics above onset, degC.
        e0_ev: Driving-force scale of the kinetics, eV/atom.
        min_drive_ev: Reactions with a smaller driving force do not run, eV/atom.
    """

    def __init__(
        self,
        hull: PhaseDiagram,
        energies: Mapping[str, float],
        *,
        seed: int = 0,
        tau_c: float = 100.0,
        e0_ev: float = 0.020,
        min_drive_ev: float = 0.002,
    ) -> None:
        self.hull = hull
        self.energies = dict(energies)
        self.seed = seed
        self.tau_c = tau_c
        self.e0_ev = e0_ev
        self.min_drive_ev = min_drive_ev

    def melting_point_k(self, formula: str) -> float:
        """The hidden melting point of a phase, K (drawn from the seed, 1500-2500 K)."""
        return _uniform(self.seed, f"melt/{formula}", 1500.0, 2500.0)

    def tammann_fraction(self, a: str, b: str) -> float:
        """The hidden onset fraction of a pair's lower melting point (0.5 to 0.7)."""
        first, second = sorted((a, b))
        return _uniform(self.seed, f"tammann/{first}+{second}", 0.5, 0.7)

    def onset_c(self, a: str, b: str) -> float:
        """A pair's onset temperature (Tammann's rule), degC."""
        low = min(self.melting_point_k(a), self.melting_point_k(b))
        return self.tammann_fraction(a, b) * low - 273.15

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - one model per world, kept for its life
    def pair(self, a: str, b: str) -> PairReaction:
        """The most favourable reaction of phases ``a`` and ``b`` (``a == b``: decomposition).

        Args:
            a: Reduced formula of a solid phase with a known energy.
            b: Another (or the same).

        Returns:
            The reaction; ``drive_ev_per_atom`` is 0 and ``products`` empty when none runs.
        """
        ca = Composition(a).fractional_composition
        cb = Composition(b).fractional_composition
        ea, eb = self.energies[a], self.energies[b]
        onset = self.onset_c(a, b)
        elements = sorted({el.symbol for el in (ca + cb).elements})
        va = np.array([ca.get_atomic_fraction(el) for el in elements])
        vb = np.array([cb.get_atomic_fraction(el) for el in elements])
        if a == b:
            kinks = [(0.0, ca)]
        else:
            kinks = []
            for comp in self.hull.get_critical_compositions(ca, cb):
                c = Composition(comp).fractional_composition
                v = np.array([c.get_atomic_fraction(el) for el in elements])
                d = vb - va
                x = float(np.clip(np.dot(v - va, d) / np.dot(d, d), 0.0, 1.0))
                if 1e-9 < x < 1.0 - 1e-9:  # an end alone is a decomposition, not a reaction
                    kinks.append((x, c))
        best: tuple[float, float, Composition] = (0.0, 0.0, ca)
        for x, c in kinks:
            drive = float(self.hull.get_hull_energy_per_atom(c)) - ((1 - x) * ea + x * eb)
            if drive < best[0] - 1e-12:
                best = (drive, x, c)
        drive, x, c = best
        if drive > -self.min_drive_ev:
            return PairReaction((a, b), onset, 0.0, x, ())
        decomposition = self.hull.get_decomposition(c)
        products: dict[str, float] = {}
        for entry, fraction in decomposition.items():
            name = entry.composition.reduced_formula
            products[name] = products.get(name, 0.0) + float(fraction)
        return PairReaction((a, b), onset, drive, x, tuple(sorted(products.items())))

    def extent(self, reaction: PairReaction, temperature_c: float) -> float:
        """Fraction of the limiting reactant that reacts at ``temperature_c`` (0 below onset)."""
        if reaction.drive_ev_per_atom >= 0.0 or temperature_c <= reaction.onset_c:
            return 0.0
        thermal = 1.0 - math.exp(-(temperature_c - reaction.onset_c) / self.tau_c)
        driven = 1.0 - math.exp(-abs(reaction.drive_ev_per_atom) / self.e0_ev)
        return thermal * driven

    def heat(
        self, atoms: Mapping[str, float], temperature_c: float
    ) -> tuple[dict[str, float], list[ReactionStep]]:
        """Heat a mixture once at ``temperature_c``.

        Args:
            atoms: Atoms of each solid phase (any common unit), by reduced formula.
            temperature_c: Furnace temperature, degC.

        Returns:
            The solid phases left (atoms of each, O2 released) and the reactions that ran,
            in order.
        """
        state = {k: float(v) for k, v in atoms.items() if v > EPS_ATOMS}
        done: set[tuple[str, str]] = set()
        steps: list[ReactionStep] = []
        while True:
            present = sorted(state)
            options: list[tuple[float, tuple[str, str], PairReaction, float]] = []
            for i, a in enumerate(present):
                for b in present[i:]:
                    if (a, b) in done:
                        continue
                    reaction = self.pair(a, b)
                    f = self.extent(reaction, temperature_c)
                    if f > 0.0:
                        options.append((reaction.drive_ev_per_atom, (a, b), reaction, f))
            if not options:
                break
            _, key, reaction, f = min(options, key=lambda t: (t[0], t[1]))
            done.add(key)
            a, b = key
            x = reaction.ratio
            if a == b:
                mixture = state[a]
            else:
                caps = [
                    state[a] / (1 - x) if x < 1 else math.inf,
                    state[b] / x if x > 0 else math.inf,
                ]
                mixture = min(caps)
            used = f * mixture
            if a == b:
                state[a] -= used
            else:
                state[a] -= (1 - x) * used
                state[b] -= x * used
            for name, share in reaction.products:
                if name != GAS:
                    state[name] = state.get(name, 0.0) + share * used
            state = {k: v for k, v in state.items() if v > EPS_ATOMS}
            steps.append(ReactionStep(reaction, f, used))
        return state, steps
