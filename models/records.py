"""Plain records that cross package boundaries: proposals, observations, decisions.

Planners receive :class:`Observation` s and return a :class:`Decision` holding
:class:`Proposal` s; the controller stores both. They are plain frozen dataclasses so that
planners and tests never need the database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from models.params import ParamValue


@dataclass(frozen=True)
class Proposal:
    """One point a planner wants measured.

    Attributes:
        parameters: Value of every search-space parameter.
        score: The acquisition value (or other score) the planner gave the point, if any.
        origin: Where the point came from (``"sobol"``, ``"acquisition"``, a proposer name).
    """

    parameters: Mapping[str, ParamValue]
    score: float | None = None
    origin: str | None = None


@dataclass(frozen=True)
class Observation:
    """A finished experiment, as a planner learns from it.

    Attributes:
        parameters: The parameters the experiment ran with.
        objectives: Measured value of each objective (by name); empty when it failed.
        feasible: ``False`` when the experiment failed (e.g. the synthesis did not work).
        experiment_id: The store's id of the experiment, for traceability.
        uncertainties: Standard uncertainty of each objective's value (by name, in the
            objective's units) where the instrument reported one; planners then treat the
            noise as known (fixed-noise GP) instead of inferring it.
        measurements: Every scalar measurement of the experiment's completed steps, by name
            (objectives included; where two steps measured the same name, the later step's
            value). Planners that learn from more than the objectives (which phases formed,
            an intermediate's yield) read them here.
    """

    parameters: Mapping[str, ParamValue]
    objectives: Mapping[str, float]
    feasible: bool = True
    experiment_id: int | None = None
    uncertainties: Mapping[str, float] = field(default_factory=dict)
    measurements: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """What a planner decided in one ``ask`` and what is needed to replay it.

    Attributes:
        proposals: The points proposed, best first.
        planner: Registered planner name.
        version: Planner version string (bumped when its behaviour changes).
        seed: Seed the decision used.
        n_train: Number of observations the planner learned from.
        n_pending: Number of pending experiments it was told about.
        candidate_scores: Scores of the candidates it considered (acquisition values).
        seconds: Wall time the decision took, in seconds.
        details: Anything else needed to replay it (model hyperparameters, phase of the
            strategy such as ``"initial_design"``), JSON-serialisable.
    """

    proposals: Sequence[Proposal]
    planner: str
    version: str
    seed: int
    n_train: int
    n_pending: int = 0
    candidate_scores: Sequence[float] = ()
    seconds: float = 0.0
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Measurement:
    """One quantity an instrument action measured.

    Exactly one of ``value`` (a scalar) and ``array`` (a raw array, nested lists of numbers)
    is set.

    Attributes:
        name: The output's name as the action declares it.
        value: The scalar value, in ``unit``.
        uncertainty: Standard uncertainty of ``value`` reported by the instrument, if any.
        unit: Unit of the value.
        array: Raw data (a spectrum, a diffraction pattern), as nested lists.
    """

    name: str
    value: float | None = None
    uncertainty: float | None = None
    unit: str = ""
    array: list[Any] | None = None
