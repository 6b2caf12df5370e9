"""Named registries of extension classes (drivers, simulated worlds, planners).

An extension registers under a name with a class decorator; registering a name twice is an
error at import time, and looking up an unknown name lists the known ones (after BoTorch's
``acquisition/input_constructors.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from models.errors import RegistryError

_T = TypeVar("_T")
_C = TypeVar("_C", bound=type[Any])


class Registry(Generic[_T]):
    """Classes registered by name.

    Args:
        kind: What is registered (``"driver"``, ``"world"``, ``"planner"``), for messages.
        on_register: Called with ``(name, cls)`` when a class registers, e.g. to set its
            ``name`` attribute.
    """

    def __init__(
        self, kind: str, on_register: Callable[[str, type[_T]], None] | None = None
    ) -> None:
        self.kind = kind
        self._classes: dict[str, type[_T]] = {}
        self._on_register = on_register

    def register(self, name: str) -> Callable[[_C], _C]:
        """Class decorator registering the class under ``name`` (it returns the class as is).

        Raises:
            RegistryError: If ``name`` is already registered.
        """

        def decorate(cls: _C) -> _C:
            if name in self._classes:
                other = self._classes[name]
                raise RegistryError(
                    f"{self.kind} {name!r} is already registered by "
                    f"{other.__module__}.{other.__qualname__}"
                )
            if self._on_register is not None:
                self._on_register(name, cls)
            self._classes[name] = cls
            return cls

        return decorate

    def get(self, name: str) -> type[_T]:
        """The class registered as ``name``.

        Raises:
            RegistryError: If none is (the message lists the registered names).
        """
        try:
            return self._classes[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise RegistryError(f"unknown {self.kind} {name!r} (registered: {known})") from None

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._classes)

    def copy(self) -> Registry[_T]:
        """A new registry holding the same classes (tests change it freely)."""
        other: Registry[_T] = Registry(self.kind, self._on_register)
        other._classes = dict(self._classes)
        return other

    def __contains__(self, name: object) -> bool:
        return name in self._classes
