"""Named registries of extension classes (drivers, simulated worlds, planners, surrogates).

An extension registers under a name with a class decorator; registering a name twice is an
error at import time, and looking up an unknown name lists the known ones (after BoTorch's
``acquisition/input_constructors.py``).

Other installed packages add extensions through Python entry points: a registry made with an
entry-point ``group`` (``sdlab.drivers``, ``sdlab.planners``, ``sdlab.worlds``,
``sdlab.surrogates``) loads that group's entry points lazily, the first time a name it does
not know is looked up or the names are listed. An entry point names the class
(``my-furnace = "mylab.furnace:Furnace"``); loading it imports the module, whose decorator
registers the class, or registers the class under the entry point's name if the module
has no decorator. A lookup loads only the entry points of the name it looks up; listing the
names loads them all. A name that two distributions both provide is an error naming both.

A package's own extensions are declared by name with the module that registers them
(``builtins``, or :meth:`Registry.declare`): a lookup imports only the module of the name
it looks up, so a process that hosts one simulated world never imports the libraries of
the others (torch, pymatgen). Listing the names imports every declared module.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

from models.errors import RegistryError

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_C = TypeVar("_C", bound=type[Any])

EntryPointSource = Callable[[str], Iterable[importlib.metadata.EntryPoint]]
"""What lists a group's entry points (default: the installed distributions')."""


def installed_entry_points(group: str) -> list[importlib.metadata.EntryPoint]:
    """The entry points of ``group`` that the installed distributions declare."""
    return list(importlib.metadata.entry_points(group=group))


@functools.cache
def _packages_distributions() -> Mapping[str, list[str]]:
    """Top-level package -> distributions, read once (it walks every installed
    distribution's file list: a quarter of a second, too slow to repeat per class)."""
    try:
        return importlib.metadata.packages_distributions()
    except Exception:  # a broken distribution's metadata must not break a listing
        return {}


def distribution_of_module(module: str) -> str | None:
    """The installed distribution that provides the top-level package of ``module``."""
    dists = _packages_distributions().get(module.partition(".")[0])
    return dists[0] if dists else None


def _entry_dist(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return str(dist.name) if dist is not None else "?"


class Registry(Generic[_T]):
    """Classes registered by name.

    Args:
        kind: What is registered (``"driver"``, ``"world"``, ``"planner"``), for messages.
        on_register: Called with ``(name, cls)`` when a class registers, e.g. to set its
            ``name`` attribute.
        group: Entry-point group of the extensions other packages provide (``None``: none).
        entry_points: Lists a group's entry points (default: the installed distributions').
        builtins: This package's own extensions: name -> the module whose import registers
            it (imported on the first lookup of that name; see :meth:`declare`).
    """

    def __init__(
        self,
        kind: str,
        on_register: Callable[[str, type[_T]], None] | None = None,
        *,
        group: str | None = None,
        entry_points: EntryPointSource = installed_entry_points,
        builtins: Mapping[str, str] | None = None,
    ) -> None:
        self.kind = kind
        self.group = group
        self._classes: dict[str, type[_T]] = {}
        self._origins: dict[str, str | None] = {}  # None: look it up when asked
        self._on_register = on_register
        self._entry_points = entry_points
        self._plugins_loaded = group is None
        self._plugin_names_loaded: set[str] = set()  # names whose entry points were loaded
        self._loading: str | None = None  # distribution whose entry point is being loaded
        self._builtins: dict[str, str] = {}
        self.declare(builtins or {})

    def declare(self, builtins: Mapping[str, str]) -> None:
        """Declare built-in extensions by name, each with the module that registers it.

        Nothing is imported now: :meth:`get` imports the module of the name it looks up,
        :meth:`names` imports every declared module.

        Args:
            builtins: Name -> module (``{"alab": "sim.alab.world"}``).

        Raises:
            RegistryError: If a name is already declared with another module.
        """
        for name, module in builtins.items():
            known = self._builtins.get(name)
            if known is not None and known != module:
                raise RegistryError(
                    f"{self.kind} {name!r} is already declared by module {known}; "
                    f"{module} declares it too"
                )
            self._builtins[name] = module

    def load_builtins(self) -> None:
        """Import the module of every declared built-in extension."""
        for module in sorted(set(self._builtins.values())):
            importlib.import_module(module)

    def register(self, name: str) -> Callable[[_C], _C]:
        """Class decorator registering the class under ``name`` (it returns the class as is).

        Raises:
            RegistryError: If ``name`` is already registered by another class.
        """

        def decorate(cls: _C) -> _C:
            self._add(name, cls, self._loading)
            return cls

        return decorate

    def _add(self, name: str, cls: type[Any], dist: str | None) -> None:
        if name in self._classes:
            other = self._classes[name]
            if other is cls:
                return
            mine = dist or distribution_of_module(cls.__module__) or "?"
            theirs = self._origin_of(name)
            raise RegistryError(
                f"{self.kind} {name!r} is already registered by "
                f"{other.__module__}.{other.__qualname__} (distribution {theirs}); "
                f"{cls.__module__}.{cls.__qualname__} (distribution {mine}) registers it too"
            )
        if self._on_register is not None:
            self._on_register(name, cls)
        self._classes[name] = cls
        self._origins[name] = dist

    def load_plugins(self) -> None:
        """Load the entry points of this registry's group (once; later calls do nothing).

        Raises:
            RegistryError: If two distributions provide the same name, or an entry point
                cannot be loaded (the message names the distribution and entry point).
        """
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        assert self.group is not None
        self._load_entry_points(list(self._entry_points(self.group)))

    def _load_plugin(self, name: str) -> None:
        """Load the entry points named ``name`` only (once per name)."""
        if self._plugins_loaded or name in self._plugin_names_loaded:
            return
        self._plugin_names_loaded.add(name)
        assert self.group is not None
        self._load_entry_points([ep for ep in self._entry_points(self.group) if ep.name == name])

    def _load_entry_points(self, eps: list[importlib.metadata.EntryPoint]) -> None:
        by_name: dict[str, list[importlib.metadata.EntryPoint]] = {}
        for ep in eps:
            by_name.setdefault(ep.name, []).append(ep)
        for name, same in by_name.items():
            dists = sorted({_entry_dist(ep) for ep in same})
            if len(dists) > 1:
                raise RegistryError(
                    f"{self.kind} {name!r} is provided by two distributions: "
                    f"{' and '.join(dists)} (entry-point group {self.group}); "
                    "uninstall one of them"
                )
        for name, [ep, *_] in by_name.items():
            dist = _entry_dist(ep)
            self._loading = dist
            try:
                obj = ep.load()
            except RegistryError:
                raise
            except Exception as exc:
                raise RegistryError(
                    f"{self.kind} {name!r} of distribution {dist} (entry point "
                    f"{ep.value!r} in group {self.group}) cannot be loaded: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            finally:
                self._loading = None
            if not isinstance(obj, type):
                raise RegistryError(
                    f"{self.kind} {name!r} of distribution {dist}: entry point {ep.value!r} "
                    f"is {type(obj).__name__}, not a class"
                )
            if self._classes.get(name) is not obj:
                self._add(name, obj, dist)
            logger.debug("%s %r loaded from distribution %s", self.kind, name, dist)

    def get(self, name: str) -> type[_T]:
        """The class registered as ``name``.

        An unknown name imports its declared built-in module, then loads the entry points
        of that name; nothing else is imported.

        Raises:
            RegistryError: If none is (the message lists the registered names).
        """
        if name not in self._classes and name in self._builtins:
            importlib.import_module(self._builtins[name])
        if name not in self._classes:
            self._load_plugin(name)
        try:
            return self._classes[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise RegistryError(f"unknown {self.kind} {name!r} (registered: {known})") from None

    def names(self) -> list[str]:
        """Every registered name, sorted (declared built-ins and entry points included)."""
        self.load_builtins()
        self.load_plugins()
        return sorted(self._classes)

    def origin(self, name: str) -> str:
        """The distribution the class registered as ``name`` came from (``"?"``: unknown).

        Raises:
            RegistryError: If no class has that name.
        """
        self.get(name)
        return self._origin_of(name)

    def _origin_of(self, name: str) -> str:
        dist = self._origins.get(name)
        if dist is None and name in self._classes:
            dist = distribution_of_module(self._classes[name].__module__)
        return dist or "?"

    def copy(self) -> Registry[_T]:
        """A new registry holding the same classes (tests change it freely)."""
        other: Registry[_T] = Registry(
            self.kind,
            self._on_register,
            group=self.group,
            entry_points=self._entry_points,
            builtins=self._builtins,
        )
        other._classes = dict(self._classes)
        other._origins = dict(self._origins)
        other._plugins_loaded = self._plugins_loaded
        other._plugin_names_loaded = set(self._plugin_names_loaded)
        return other

    def __contains__(self, name: object) -> bool:
        return name in self._classes
