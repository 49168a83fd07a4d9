"""Modules imported on first attribute access, so start-up does not pay for what a
configuration never uses (PyJWT and cryptography with CDS_AUTH_MODE=off)."""

from __future__ import annotations

import importlib
import sys
import types


class _LazyModule(types.ModuleType):
    def __getattr__(self, attr: str):
        module = importlib.import_module(self.__name__)
        # From now on this proxy forwards straight to the real module's namespace.
        self.__dict__.update(module.__dict__)
        return getattr(module, attr)


def lazy_module(name: str) -> types.ModuleType:
    """``name`` itself when already imported, else a proxy importing it on first use."""
    if name in sys.modules:
        return sys.modules[name]
    return _LazyModule(name)
