"""Lazy re-exports for package ``__init__`` modules (PEP 562 module ``__getattr__``).

A package lists ``name -> submodule`` and imports a submodule only when one of its names is
first used, so ``import crowdmed`` or ``import crowdmed.aggregation`` stays cheap and a
command imports only what it runs. The public names and ``__all__`` stay the same.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_exports", "preload"]


def lazy_exports(
    package: str, exports: Mapping[str, Iterable[str]], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module ``__getattr__`` and ``__dir__`` of a package that re-exports names lazily.

    Args:
        package: The package's ``__name__``.
        exports: Submodule (absolute, or relative to ``package`` when it starts with ``.``)
            -> the names it provides.
        namespace: The package's ``globals()``; a loaded name is cached there.

    Returns:
        ``(__getattr__, __dir__)`` to assign in the package.
    """
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            # A submodule not imported yet (``crowdmed.aggregation.classification``).
            try:
                return importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{package}.{name}":
                    raise
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(where))

    return __getattr__, __dir__


def preload(*modules: str) -> threading.Thread:
    """Import ``modules`` in a background thread, so the import overlaps other work.

    Meant for a heavy module the caller will need after a step that releases the GIL (a file
    parsed by pyarrow): the main thread then finds it imported, or waits on the import lock
    for the rest of it. A module that fails to import is left for the caller's own import to
    raise from.

    Returns:
        The started daemon thread.
    """

    def run() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # the caller's own import reports it
                return

    thread = threading.Thread(target=run, name="crowdmed-preload", daemon=True)
    thread.start()
    return thread
