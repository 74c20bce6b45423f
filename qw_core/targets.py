"""Turning a target string into the callable every job is handed to.

Two forms are built in: ``"pkg.module:func"`` (the modern form; ``func`` may be a dotted
attribute path such as ``Class.method``) and the original qw's ``"pkg.module.func"``.
A callable passes through untouched. Other forms come from plugins implementing
``qw_load_target``; the built-in loader is registered ``trylast`` so theirs win.

Only the target named when the manager starts is ever loaded: nothing in a job's data is
imported or called.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import Any

import pluggy

from qw_core.errors import (
    TargetAttributeNotFound,
    TargetError,
    TargetModuleNotFound,
    TargetNotCallable,
)

Target = Callable[..., Any]


class TargetLoader:
    """Loads targets through the ``qw_load_target`` hook of one plugin manager."""

    def __init__(self, hook: pluggy.HookRelay) -> None:
        self._hook = hook

    def load(self, target: str | Target) -> Target:
        """Return the callable ``target`` names.

        :raises TargetModuleNotFound: the module part cannot be found.
        :raises TargetAttributeNotFound: the module has no such attribute.
        :raises TargetNotCallable: the named object is not callable.
        :raises TargetError: the string is empty or the module raised while importing.
        """
        if callable(target):
            return target
        if not isinstance(target, str) or not target.strip():
            raise TargetError(f"target must be a callable or a 'module:function' string, not {target!r}")
        loaded = self._hook.qw_load_target(spec=target.strip())
        if loaded is None:
            raise TargetError(f"no plugin understands the target {target!r}")
        if not callable(loaded):
            raise TargetNotCallable(
                f"target {target!r} names a {type(loaded).__name__}, which is not callable"
            )
        return loaded  # type: ignore[no-any-return]


def import_target(spec: str) -> Any:
    """Import what ``"module:attr.path"`` or ``"module.attr"`` names (not checked callable)."""
    if ":" in spec:
        module_name, _, attr_path = spec.partition(":")
        if not module_name or not attr_path:
            raise TargetError(f"target {spec!r} must look like 'module:function'")
        module = _import_module(module_name, spec)
    else:
        module_name, attr_path = _split_dotted(spec)
        module = _import_module(module_name, spec)
    obj: Any = module
    walked = module_name
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TargetAttributeNotFound(f"target {spec!r}: {walked!r} has no attribute {part!r}") from None
        walked = f"{walked}.{part}"
    return obj


def _split_dotted(spec: str) -> tuple[str, str]:
    """Split ``"a.b.c"`` into the longest importable module prefix and the rest."""
    parts = spec.split(".")
    if len(parts) < 2:
        raise TargetError(f"target {spec!r} must look like 'module:function' or 'module.function'")
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        if _module_exists(module_name):
            return module_name, ".".join(parts[cut:])
    raise TargetModuleNotFound(f"target {spec!r}: no module named {parts[0]!r}", name=parts[0])


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _import_module(module_name: str, spec: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise TargetModuleNotFound(
                f"target {spec!r}: no module named {exc.name!r}", name=exc.name
            ) from None
        raise TargetError(f"target {spec!r}: importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:  # the user's module raised at import time
        raise TargetError(
            f"target {spec!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}"
        ) from exc
