"""What drivers are installed: the listing behind ``sdlab drivers list``.

Each registered driver (built in, or from an installed package's ``sdlab.drivers`` entry
point) is listed with the distribution it came from, whether it carries a simulated
backend, and its actions. Actions need an instance: the driver is built with its default
options (on its simulated backend where it has one) without connecting; a driver that
cannot be built that way, or discovers its actions from the hardware, is listed with
"actions known after connect".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from instruments.driver import DRIVERS, driver_names, get_driver

logger = logging.getLogger(__name__)

AFTER_CONNECT = "actions known after connect"


@dataclass(frozen=True)
class DriverInfo:
    """One line of the driver listing.

    Attributes:
        name: The registered name (what a gateway file's ``driver`` says).
        distribution: The installed distribution that provides it (``"?"``: unknown).
        version: The driver's version.
        simulated: Whether it carries a simulated backend.
        actions: Its action names, or ``None`` when they are known only after connect.
        note: Why the actions are not listed, if they are not.
    """

    name: str
    distribution: str
    version: str
    simulated: bool
    actions: tuple[str, ...] | None
    note: str = ""

    @property
    def actions_text(self) -> str:
        """The actions, comma-separated, or why they are not known."""
        return ", ".join(self.actions) if self.actions is not None else AFTER_CONNECT


def describe_driver(name: str) -> DriverInfo:
    """The listing line of the driver registered as ``name``.

    Raises:
        RegistryError: If no driver has that name.
    """
    cls = get_driver(name)
    actions: tuple[str, ...] | None = None
    note = ""
    try:
        driver = cls(f"{name}-probe", None, simulated=cls.supports_simulation)
        actions = tuple(a.name for a in driver.actions())
    except Exception as exc:  # needs options, or the hardware, to know its actions
        note = f"{type(exc).__name__}: {exc}".splitlines()[0]
        logger.debug("driver %s: no actions without connecting: %s", name, note)
    return DriverInfo(
        name=name,
        distribution=DRIVERS.origin(name),
        version=cls.version,
        simulated=cls.supports_simulation,
        actions=actions,
        note=note,
    )


def driver_catalog() -> list[DriverInfo]:
    """Every registered driver's listing line, sorted by name.

    Raises:
        RegistryError: If two installed distributions provide the same driver name.
    """
    return [describe_driver(name) for name in driver_names()]
