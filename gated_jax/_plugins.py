"""Discovery of plug-in modules (verification rows, report sections, benchmark suites)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from types import ModuleType


def discover(package: str, path: Iterable[str], *, skip: tuple[str, ...] = ()) -> list[ModuleType]:
    """Import every public module of ``package`` (not ``_private``, not in ``skip``), by ``ORDER``.

    Adding a capability's file to a registry package is the whole registration: no shared list
    to edit.
    """
    mods = [
        importlib.import_module(f"{package}.{info.name}")
        for info in pkgutil.iter_modules(path)
        if not info.name.startswith("_") and info.name not in skip
    ]
    return sorted(mods, key=lambda m: getattr(m, "ORDER", 100))
