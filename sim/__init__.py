"""Simulated instruments: hidden ground truths (``sim.worlds``), separate noise models
(``sim.noise``), simulated drivers (``sim.drivers``) and a process that serves them over the
real ZeroMQ protocol (``python -m sim.serve``).

A simulated instrument is an instrument server like any other, so a simulated campaign runs
the same code path as a real one. Importing :mod:`sim.drivers` registers the simulated
drivers (``"objective-station"``) with :func:`instruments.driver.register_driver`;
:mod:`sim.sara` registers ``"sara-wafer"`` (loaded by :func:`sim.drivers.make_driver`).
"""
