"""The driver kit: ``sdlab driver new NAME DIR`` writes an installable driver package.

The package holds a :class:`~instruments.driver.BlockingDriver` for a serial instrument
with a line protocol, its simulated backend, a ``pyproject.toml`` registering the driver
through the ``sdlab.drivers`` entry point, a gateway file, a tiny campaign, tests that run
the driver against its simulated backend through a real gateway and ``sdlab run``, and a
README. The templates are package data (``instruments/kit/templates``).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

KIT_NAME_PATTERN = r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$"
"""Names the kit accepts: lowercase words joined by single hyphens (``acme-hotplate``)."""

_FILES = {
    "pyproject.toml.tmpl": "pyproject.toml",
    "README.md.tmpl": "README.md",
    "lab.toml.tmpl": "lab.toml",
    "campaign.toml.tmpl": "campaign.toml",
    "__init__.py.tmpl": "{{module}}/__init__.py",
    "driver.py.tmpl": "{{module}}/driver.py",
    "simulated.py.tmpl": "{{module}}/simulated.py",
    "test_driver.py.tmpl": "tests/test_driver.py",
}


class KitError(ValueError):
    """The kit cannot write the package (bad name, or the directory is in use)."""


def kit_names(name: str) -> dict[str, str]:
    """The placeholders of the templates for driver ``name``.

    Raises:
        KitError: If ``name`` is not lowercase words joined by hyphens.
    """
    if not re.match(KIT_NAME_PATTERN, name) or len(name) > 64:
        raise KitError(
            f"NAME {name!r}: use lowercase letters and digits, words joined by single "
            "hyphens, starting with a letter (e.g. acme-hotplate)"
        )
    module = name.replace("-", "_")
    return {
        "name": name,
        "module": module,
        "cls": "".join(part.capitalize() for part in name.split("-")),
        "upper": module.upper(),
        "kind": module,
    }


def _render(text: str, names: dict[str, str]) -> str:
    for key, value in names.items():
        text = text.replace("{{" + key + "}}", value)
    if "{{" in text:
        raise AssertionError(f"unfilled placeholder in a template: {text[text.index('{{') :][:40]}")
    return text


def new_driver_package(name: str, directory: Path) -> list[Path]:
    """Write the driver package for ``name`` into ``directory``.

    Args:
        name: The driver's registered name, also the distribution name.
        directory: Where to write; must not exist or be empty.

    Returns:
        The files written.

    Raises:
        KitError: If the name is bad or the directory exists and is not empty (nothing
            is written then).
    """
    names = kit_names(name)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise KitError(f"DIR {str(directory)!r} exists and is not empty; nothing written")
    templates = resources.files("instruments.kit") / "templates"
    written: list[Path] = []
    for template, target in _FILES.items():
        path = directory / _render(target, names)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_render((templates / template).read_text(encoding="utf-8"), names))
        written.append(path)
    typed = directory / names["module"] / "py.typed"
    typed.write_text("")
    written.append(typed)
    return written
