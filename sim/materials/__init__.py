"""A simulated materials lab whose hidden truth is CHGNet (see :mod:`sim.materials.world`).

Importing :mod:`sim.materials.drivers` registers the ``materials-synthesis``,
``materials-xrd`` and ``materials-property`` simulated drivers.
"""
