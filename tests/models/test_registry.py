"""The shared name registry (models/registry.py)."""

from __future__ import annotations

import pytest

from models.errors import RegistryError
from models.registry import Registry


class Base:
    label = ""


def test_register_get_names_and_hook() -> None:
    reg: Registry[Base] = Registry("widget", lambda name, cls: setattr(cls, "label", name))

    @reg.register("b")
    class B(Base):
        pass

    @reg.register("a")
    class A(Base):
        pass

    assert reg.names() == ["a", "b"]
    assert reg.get("a") is A
    assert A.label == "a"
    assert "b" in reg
    assert "c" not in reg


def test_duplicate_and_unknown_names_are_errors_naming_what_exists() -> None:
    reg: Registry[Base] = Registry("widget")
    reg.register("a")(Base)
    with pytest.raises(RegistryError, match="widget 'a' is already registered by"):
        reg.register("a")(type("Other", (Base,), {}))
    with pytest.raises(RegistryError, match=r"unknown widget 'z' \(registered: a\)"):
        reg.get("z")


def test_copy_is_independent() -> None:
    reg: Registry[Base] = Registry("widget")
    reg.register("a")(Base)
    other = reg.copy()
    other.register("b")(type("B", (Base,), {}))
    assert reg.names() == ["a"]
    assert other.names() == ["a", "b"]
