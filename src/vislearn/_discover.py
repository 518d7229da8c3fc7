"""Import every module of a package so that its registration decorators run.

Model families, recipes, reproductions, losses and CLI commands live one per file; importing the
package imports them all, so adding a file is all it takes to add one (no central list to edit).
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def import_submodules(package: ModuleType, export: bool = False) -> None:
    """Import each direct submodule of ``package`` (names starting with ``_`` are skipped).

    With ``export=True`` the names in each submodule's ``__all__`` become package attributes, so
    ``from vislearn.losses import ProxyNCALoss`` works without a hand-kept list.
    """
    exported = list(getattr(package, "__all__", []))
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{package.__name__}.{info.name}")
        if export:
            for name in getattr(mod, "__all__", []):
                setattr(package, name, getattr(mod, name))
                exported.append(name)
    if export:
        package.__all__ = exported
