"""The shared name registry (models/registry.py)."""

from __future__ import annotations

import sys
from pathlib import Path

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


# ---------------------------------------------------------------------- entry points


def _distribution(root: Path, dist: str, module: str, group: str, names: list[str]) -> None:
    """Write an installed distribution (dist-info, as pip writes it) and its module."""
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "".join(f"{n} = {module}:Widget\n" for n in names)
    (info / "entry_points.txt").write_text(f"[{group}]\n{lines}")
    (root / f"{module}.py").write_text("class Widget:\n    label = ''\n")


def test_entry_points_load_lazily_with_their_distribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = "sdlab.test-widgets-lazy"
    _distribution(tmp_path, "widgets-acme", "acme_widgets_mod", group, ["acme"])
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry[Base] = Registry("widget", group=group)
    assert "acme" not in reg  # nothing is imported before a lookup
    assert "acme_widgets_mod" not in sys.modules
    cls = reg.get("acme")
    assert cls.__module__ == "acme_widgets_mod"
    assert reg.origin("acme") == "widgets-acme"
    assert reg.names() == ["acme"]


def test_a_name_from_two_distributions_is_an_error_naming_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = "sdlab.test-widgets-twice"
    _distribution(tmp_path, "widgets-one", "one_widgets_mod", group, ["same"])
    _distribution(tmp_path, "widgets-two", "two_widgets_mod", group, ["same"])
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry[Base] = Registry("widget", group=group)
    with pytest.raises(RegistryError) as info:
        reg.names()
    assert "widgets-one" in str(info.value)
    assert "widgets-two" in str(info.value)
    assert "'same'" in str(info.value)


def test_a_plugin_taking_a_built_in_name_is_an_error_naming_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = "sdlab.test-widgets-clash"
    _distribution(tmp_path, "widgets-clash", "clash_widgets_mod", group, ["builtin"])
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry[Base] = Registry("widget", group=group)
    reg.register("builtin")(Base)
    with pytest.raises(RegistryError, match="widgets-clash") as info:
        reg.get("other")
    assert "tests.models.test_registry.Base" in str(info.value)


def test_a_broken_entry_point_names_its_distribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = "sdlab.test-widgets-broken"
    _distribution(tmp_path, "widgets-broken", "broken_widgets_mod", group, ["bad"])
    (tmp_path / "broken_widgets_mod.py").write_text("raise ImportError('no driver here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry[Base] = Registry("widget", group=group)
    with pytest.raises(RegistryError, match=r"widgets-broken.*no driver here"):
        reg.get("bad")


def test_declared_builtins_import_only_the_module_looked_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg: Registry[Base] = Registry("widget")
    for mod in ("decl_widgets_one", "decl_widgets_two"):
        (tmp_path / f"{mod}.py").write_text(
            "from tests.models.test_registry import Base\nclass W(Base):\n    pass\n"
        )
    monkeypatch.syspath_prepend(str(tmp_path))
    reg.declare({"one": "decl_widgets_one", "two": "decl_widgets_two"})
    assert "decl_widgets_one" not in sys.modules  # declaring imports nothing
    import decl_widgets_one  # type: ignore[import-not-found]

    reg.register("one")(decl_widgets_one.W)
    assert reg.get("one") is decl_widgets_one.W
    assert "decl_widgets_two" not in sys.modules  # only the module looked up
    with pytest.raises(RegistryError, match=r"unknown widget 'two'"):
        reg.get("two")  # its module imported, but it registers nothing under "two"
    assert "decl_widgets_two" in sys.modules
    with pytest.raises(RegistryError, match="already declared by module decl_widgets_one"):
        reg.declare({"one": "elsewhere"})


def test_a_lookup_loads_only_the_entry_points_of_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = "sdlab.test-widgets-by-name"
    _distribution(tmp_path, "widgets-first", "first_widgets_mod", group, ["first"])
    _distribution(tmp_path, "widgets-second", "second_widgets_mod", group, ["second"])
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry[Base] = Registry("widget", group=group)
    assert reg.get("first").__module__ == "first_widgets_mod"
    assert "second_widgets_mod" not in sys.modules
    assert reg.names() == ["first", "second"]
    assert reg.origin("second") == "widgets-second"
