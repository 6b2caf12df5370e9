"""Planners: decide which experiments to run next.

:mod:`planners.base` holds the :class:`~planners.base.Planner` contract and the registry
(:func:`~planners.base.make_planner`, :func:`~planners.base.planner_names`). Built-in
planners: ``random`` and ``sobol`` (:mod:`planners.random`) and ``qlognei``
(:mod:`planners.bo`, Bayesian optimisation). Planners import only :mod:`models` and
:mod:`surrogates`.
"""
