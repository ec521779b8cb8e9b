"""Heavy modules loaded at their first use, so an entry point starts its JVM before it pays for them.

``import mlflow`` alone takes seconds; the modules that call MLflow bind it with ``lazy_module("mlflow")``:
the name is bound at import, the module is imported when one of its attributes is first read (in
``core.jobs``, after the JVM has started in the background).

Not the standard library's LazyLoader: on Python < 3.12 it is not thread-safe (a second thread reads a
half-run module), and a placeholder in ``sys.modules`` makes a first ``from mlflow.x import y`` run
``mlflow.x`` twice (two ``MlflowException`` classes, so ``except`` clauses miss MLflow's errors). Here
nothing is put in ``sys.modules`` early, and the import is the ordinary, locked one.
"""

from __future__ import annotations

import importlib


class _ModuleAtFirstUse:
    """Stands for the module ``name``; reading an attribute imports it (once; later reads are lookups)."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attribute: str):
        if attribute == "_name":  # not set yet: an instance being copied or unpickled
            raise AttributeError(attribute)
        return getattr(importlib.import_module(self._name), attribute)

    def __reduce__(self):  # pickled (cloudpickle, copy) as the module it stands for, by name
        return lazy_module, (self._name,)

    def __repr__(self) -> str:
        return f"<module {self._name!r}, imported at first use>"


def lazy_module(name: str):
    """The module ``name``, imported when one of its attributes is first read."""
    return _ModuleAtFirstUse(name)
