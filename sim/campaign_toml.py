"""The TOML of a campaign's problem on a simulated world: its parameters and objectives.

Tests, examples and benchmarks write many campaign files on the same simulated worlds; this
writes the part that follows from the world (one ``[[parameters]]`` table per input, with
the world's bounds, and one ``[[objectives]]`` table per output, maximised, as every
built-in world is negated so that larger is better), so that they all say it the same way:

>>> print(problem_toml("branin"))  # doctest: +NORMALIZE_WHITESPACE
[[parameters]]
name = "x1"
type = "continuous"
lower = -5.0
upper = 10.0
<BLANKLINE>
[[parameters]]
name = "x2"
type = "continuous"
lower = 0.0
upper = 15.0
<BLANKLINE>
[[objectives]]
name = "y"
direction = "maximize"
<BLANKLINE>
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from models.errors import InvalidCampaignError
from sim.worlds import get_world


def problem_toml(world: str, *, bounds: Mapping[str, tuple[float, float]] | None = None) -> str:
    """The ``[[parameters]]`` and ``[[objectives]]`` tables of a campaign on ``world``.

    Args:
        world: A registered world whose inputs are numbers (``"branin"``, ``"hartmann6"``).
        bounds: Per input, ``(lower, upper)`` to use instead of the world's bounds.

    Returns:
        The tables, each followed by a blank line.

    Raises:
        InvalidCampaignError: If ``bounds`` names an input the world does not have (key
            ``bounds.<input>``), or an input is not a bounded number.
    """
    w = get_world(world)
    limits = w.parameters()
    names = [p.name for p in limits]
    unknown = sorted(set(bounds or {}) - set(names))
    if unknown:
        raise InvalidCampaignError(
            None, [(f"bounds.{n}", f"world {world!r} has no input {n!r}") for n in unknown]
        )
    out = ""
    for p in limits:
        lower, upper = (bounds or {}).get(p.name, (p.minimum, p.maximum))
        if p.type != "number" or lower is None or upper is None:
            raise InvalidCampaignError(
                None, [(f"parameters.{p.name}", f"world {world!r}: not a bounded number")]
            )
        out += (
            f'[[parameters]]\nname = {json.dumps(p.name)}\ntype = "continuous"\n'
            f"lower = {float(lower)!r}\nupper = {float(upper)!r}\n\n"
        )
    for o in w.outputs():
        out += f'[[objectives]]\nname = {json.dumps(o.name)}\ndirection = "maximize"\n\n'
    return out
