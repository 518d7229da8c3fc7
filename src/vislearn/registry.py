"""One small name → entry registry, shared by models, converters, recipes and reproductions.

Each registers entries under unique names (a second registration of a name is a bug: ``RuntimeError``),
looks them up with an error a user can act on (``unknown model 'mpl'; closest: mlp``) and lists them,
optionally filtered by a shell pattern::

    _MODELS: Registry[ModelEntry] = Registry("model")
    _MODELS.register("mlp", entry)
    _MODELS.get("mlp"); _MODELS.names("ml*"); "mlp" in _MODELS
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from vislearn.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries by name, in registration order.

    Args:
        kind: what an entry is, for messages ("model", "recipe", ...).
        load: called before every lookup, for registries filled by importing modules on demand.
    """

    def __init__(self, kind: str, load: Callable[[], None] | None = None) -> None:
        self.kind = kind
        self._load = load
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        """Add ``entry`` under ``name``; a name registered twice is a ``RuntimeError`` (two files claim it)."""
        if name in self._entries:
            raise RuntimeError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        """The entry for ``name``; an unknown name is a ``UserError`` listing the closest names (or all)."""
        self._loaded()
        if name not in self._entries:
            close = difflib.get_close_matches(name, list(self._entries), n=5, cutoff=0.4)
            known = ", ".join(sorted(self._entries)) or "(none yet)"
            hint = f"closest: {', '.join(close)}" if close else f"known: {known}"
            raise UserError(f"unknown {self.kind} {name!r}; {hint}")
        return self._entries[name]

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted names matching the shell-style ``pattern``."""
        self._loaded()
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def values(self) -> list[T]:
        """The entries in registration order."""
        self._loaded()
        return list(self._entries.values())

    def __contains__(self, name: object) -> bool:
        self._loaded()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        self._loaded()
        return iter(list(self._entries))

    def __len__(self) -> int:
        self._loaded()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"

    def _loaded(self) -> None:
        if self._load is not None:
            self._load()
