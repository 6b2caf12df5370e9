"""A simulated A-Lab: solid-state synthesis with a hidden pairwise reaction model.

:mod:`sim.alab.world` is the ``alab`` world (phases, CHGNet hull, recipes),
:mod:`sim.alab.reactions` its reaction model, :mod:`sim.alab.drivers` the ``alab-dosing``,
``alab-furnace`` and ``alab-xrd`` simulated drivers, and :mod:`sim.alab.export` writes the
thermodynamic data a planner may use (``python -m sim.alab.export``).
"""
