"""Generic drivers for the lab standards, each configured by its ``[instruments.options]``.

- :mod:`instruments.standards.sila2`: SiLA 2 servers (``sila2``).
- :mod:`instruments.standards.opcua`: OPC UA servers (``opcua``).
- :mod:`instruments.standards.visa`: SCPI instruments over VISA (``visa``).
- :mod:`instruments.standards.ophyd`: bluesky / ophyd-async devices (``ophyd``).

Each module needs the ``lab`` extra (``pip install sdlab[lab]``); importing this package
imports none of them, so sdlab works without the extra. ``docs/standards.md`` describes
the options and what each driver supports.
"""
