"""Heavy modules loaded at their first use, so an entry point starts its JVM before it pays for them.

``import mlflow`` alone takes seconds; the modules that call MLflow bind it with ``lazy_module("mlflow")``,
the standard library's LazyLoader recipe: the name is bound at import, the module runs when one of its
attributes is first read (in ``core.jobs``, after the JVM has started in the background).
"""

from __future__ import annotations

import importlib.util
import sys


def lazy_module(name: str):
    """The module ``name``, executed at the first attribute access (at once if it is already loaded)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
