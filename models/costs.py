"""Costs of instrument actions and experiments, in a campaign's cost unit.

An action may declare what one run of it costs (``cost``, a non-negative number) and how
that cost grows with some of its numeric parameters (``cost_per``: cost per unit of each
named parameter). The cost of one run is then affine in those parameters::

    cost + sum(cost_per[p] * parameters[p] for p in cost_per)

which is the cost model of multi-fidelity Bayesian optimisation (BoTorch's
``AffineFidelityCostModel``: a fixed cost plus a cost per unit of fidelity; Wu, J.,
Toscano-Palmerin, S., Frazier, P. I. and Wilson, A. G. (2019). Practical Multi-fidelity
Bayesian Optimization for Hyperparameter Tuning. UAI 35). A campaign's workflow step may
override what the instrument declares. An experiment costs the sum of its steps' costs.

This module holds only the arithmetic and the validation shared by the wire protocol's
action schema (:class:`instruments.driver.ActionSpec`) and the campaign file
(:class:`models.campaign.WorkflowStep`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated

from pydantic import Field

NonNegativeCost = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
"""A finite, non-negative cost (pydantic type)."""


def affine_cost(fixed: float, per: Mapping[str, float], parameters: Mapping[str, object]) -> float:
    """The cost of one run of an action: ``fixed + sum(per[p] * parameters[p])``.

    Args:
        fixed: The cost of any run, in the campaign's cost unit.
        per: Cost per unit of each named parameter.
        parameters: The run's parameters; every name in ``per`` must be a number there.

    Returns:
        The cost (never negative when ``fixed``, ``per`` and the parameters are not).

    Raises:
        ValueError: If a parameter named in ``per`` is missing or not a finite number.
    """
    total = float(fixed)
    for name, rate in per.items():
        value = parameters.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"cost_per.{name}: the parameter is {value!r}, not a number")
        if not math.isfinite(float(value)):
            raise ValueError(f"cost_per.{name}: the parameter is {value!r}, not finite")
        total += float(rate) * float(value)
    return total
