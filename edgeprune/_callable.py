"""Make a subpackage callable as its main function: ``edgeprune.prune(...)`` and ``edgeprune.prune.round_channels``.

Python sets ``edgeprune.prune`` to the *module* once ``edgeprune.prune`` is imported,
shadowing a same-named function of the public API (``ep.prune``, ``ep.importance``,
``ep.profile``, ``ep.plan``, ``ep.compile``, ``ep.verify``, ``ep.recover``). Giving the
module a ``__call__`` keeps both spellings working whatever was imported first.
"""
from __future__ import annotations

import sys
import types


def make_callable(module_name: str, function_name: str) -> None:
    """Let ``sys.modules[module_name](...)`` call its attribute ``function_name``."""
    module = sys.modules[module_name]

    class CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return getattr(self, function_name)(*args, **kwargs)

    CallableModule.__call__.__doc__ = f"Call :func:`{module_name}.{function_name}`."
    module.__class__ = CallableModule
