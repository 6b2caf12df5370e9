"""The descriptor (featuriser) contract and the descriptor registry.

A descriptor turns materials (pymatgen ``Composition`` or ``Structure`` objects, or formula
strings) into fixed-length rows of floats that a surrogate can learn from::

    desc = make_descriptor("magpie")
    X = desc.featurize(["Fe2O3", "NaCl"])  # 2 x d
    desc.feature_labels()  # d names

Composition descriptors (:mod:`surrogates.composition`) accept formulas, compositions and
structures (of which they use the composition); structure descriptors
(:mod:`surrogates.structure`) need structures. Each class states in its docstring, and in
``invariances``, what leaves its features unchanged (``"site_permutation"``,
``"translation"``, ``"supercell"``); the tests check exactly those claims.

Options are a pydantic model per descriptor (unknown keys forbidden); a bad option raises
:class:`~models.errors.InvalidCampaignError` naming ``descriptor.options.<key>``.
"""

from __future__ import annotations

import importlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, ValidationError
from pymatgen.core import Composition, Structure

from models.errors import InvalidCampaignError, RegistryError
from models.registry import Registry

logger = logging.getLogger(__name__)

__all__ = [
    "DESCRIPTORS",
    "Descriptor",
    "DescriptorOptions",
    "Material",
    "as_composition",
    "descriptor_names",
    "make_descriptor",
    "register_descriptor",
    "validate_options",
]

Material = Composition | Structure | str
"""What a descriptor accepts: a composition, a structure, or a formula string."""

_BUILTIN_MODULES = ("surrogates.composition", "surrogates.structure")

_O = TypeVar("_O", bound=BaseModel)


class DescriptorOptions(BaseModel):
    """Base of every descriptor's options: frozen, unknown keys forbidden."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def validate_options(model: type[_O], options: Mapping[str, Any], prefix: str) -> _O:
    """Validate ``options`` against a pydantic model, naming bad keys as ``prefix.<key>``.

    Args:
        model: The options model.
        options: The raw options (a campaign's TOML table, or keyword arguments).
        prefix: Key path of the table, e.g. ``"descriptor.options"``.

    Returns:
        The validated options.

    Raises:
        InvalidCampaignError: One problem per bad key (``"unknown option"`` for extra keys).
    """
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        problems: list[tuple[str, str]] = []
        for err in exc.errors():
            loc = ".".join(str(part) for part in err["loc"])
            path = f"{prefix}.{loc}" if loc else prefix
            msg = "unknown option" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append((path, msg))
        raise InvalidCampaignError(None, problems) from exc


def as_composition(material: Material) -> Composition:
    """The composition of a material (a formula string is parsed by pymatgen).

    Raises:
        ValueError: If a formula cannot be parsed or the material is of another type.
    """
    if isinstance(material, Composition):
        return material
    if isinstance(material, Structure):
        return material.composition
    if isinstance(material, str):
        try:
            return Composition(material)
        except Exception as exc:  # pymatgen raises several kinds for bad formulas
            raise ValueError(f"cannot parse formula {material!r}: {exc}") from exc
    raise ValueError(f"expected a Composition, Structure or formula, got {type(material)}")


class Descriptor(ABC):
    """Base class of every descriptor.

    Subclasses set ``name`` (via :func:`register_descriptor`), ``needs_structure``,
    ``invariances``, an ``Options`` model, and implement :meth:`featurize_one` and
    :meth:`feature_labels`.

    Args:
        **options: Descriptor-specific options (see the class's ``Options`` model).

    Raises:
        InvalidCampaignError: If an option is unknown or invalid.
    """

    name: ClassVar[str] = ""
    needs_structure: ClassVar[bool] = False
    invariances: ClassVar[tuple[str, ...]] = ()
    Options: ClassVar[type[DescriptorOptions]] = DescriptorOptions

    def __init__(self, **options: Any) -> None:
        self.options = validate_options(type(self).Options, options, "descriptor.options")

    @property
    def dim(self) -> int:
        """Number of features per material."""
        return len(self.feature_labels())

    def featurize(self, materials: Sequence[Material]) -> NDArray[np.float64]:
        """Features of each material, one row each.

        Args:
            materials: ``n`` materials.

        Returns:
            An ``n x d`` array (``d = len(feature_labels())``).

        Raises:
            ValueError: If a material is of the wrong kind (a formula given to a structure
                descriptor) or cannot be featurised; the message gives its index.
        """
        rows = np.zeros((len(materials), self.dim), dtype=np.float64)
        for i, material in enumerate(materials):
            if self.needs_structure and not isinstance(material, Structure):
                raise ValueError(
                    f"descriptor {self.name!r} needs structures; material {i} is "
                    f"{type(material).__name__}"
                )
            try:
                rows[i] = self.featurize_one(material)
            except ValueError as exc:
                raise ValueError(f"descriptor {self.name!r}, material {i}: {exc}") from exc
        return rows

    @abstractmethod
    def featurize_one(self, material: Material) -> NDArray[np.float64]:
        """The ``d`` features of one material."""

    @abstractmethod
    def feature_labels(self) -> list[str]:
        """Names of the ``d`` features, in column order."""


def _set_name(name: str, cls: type[Descriptor]) -> None:
    cls.name = name


DESCRIPTORS: Registry[Descriptor] = Registry("descriptor", _set_name)


def register_descriptor(name: str) -> Callable[[type[Descriptor]], type[Descriptor]]:
    """Class decorator registering a descriptor under ``name``.

    Raises:
        RegistryError: If ``name`` is already registered.
    """
    return DESCRIPTORS.register(name)


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def descriptor_names() -> list[str]:
    """Names of every registered descriptor, sorted (the built-in ones included)."""
    _load_builtins()
    return DESCRIPTORS.names()


def make_descriptor(name: str, **options: Any) -> Descriptor:
    """Build a registered descriptor.

    Args:
        name: Registered descriptor name (see :func:`descriptor_names`).
        **options: The descriptor's options.

    Raises:
        RegistryError: If no descriptor has that name (the message lists the known ones).
        InvalidCampaignError: If an option is unknown or invalid
            (``descriptor.options.<key>``).
    """
    _load_builtins()
    if not isinstance(name, str):
        raise RegistryError(f"descriptor name must be a string, got {name!r}")
    return DESCRIPTORS.get(name)(**options)
