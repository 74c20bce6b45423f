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
import inspect
import os
import sys
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
            check_signature(target, getattr(target, "__qualname__", repr(target)))
            return target
        if not isinstance(target, str) or not target.strip():
            raise TargetError(f"target must be a callable or a 'module:function' string, not {target!r}")
        loaded = self._hook.qw_load_target(spec=target.strip())
        if loaded is None:
            raise TargetError(f"no plugin understands the target {target!r}")
        if not callable(loaded):
            kind = type(loaded).__name__
            raise TargetNotCallable(f"target {target!r} names {_article(kind)} {kind}, which is not callable")
        check_signature(loaded, target)
        return loaded  # type: ignore[no-any-return]


def check_signature(target: Target, name: str) -> None:
    """Refuse a callable that cannot be called as ``target(job_id, job_data)``: better once
    at start than a ``TypeError`` on every job. A callable whose signature Python cannot
    tell (some built-ins) is let through.

    :raises TargetNotCallable: with the signature it has.
    """
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return
    try:
        signature.bind("job-id", {})
    except TypeError:
        raise TargetNotCallable(
            f"target {name!r} takes {signature}: a target must accept (job_id, job_data)"
        ) from None


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


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
            if _module_exists(f"{walked}.{part}"):
                raise TargetError(
                    f"target {spec!r} names a module, not a function: write '{walked}.{part}:function'"
                ) from None
            raise TargetAttributeNotFound(f"target {spec!r}: {walked!r} has no attribute {part!r}") from None
        walked = f"{walked}.{part}"
    return obj


def _split_dotted(spec: str) -> tuple[str, str]:
    """Split ``"a.b.c"`` into the longest importable module prefix and the rest."""
    parts = spec.split(".")
    if _module_exists(spec):
        raise TargetError(f"target {spec!r} names a module, not a function: write '{spec}:function'")
    if len(parts) < 2:
        raise TargetError(f"target {spec!r} must look like 'module:function' or 'module.function'")
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        if _module_exists(module_name):
            return module_name, ".".join(parts[cut:])
    raise _not_found(spec, parts[0])


def _not_found(spec: str, name: str) -> TargetModuleNotFound:
    """The error for a module that cannot be found, saying where qw looked."""
    where = "the Python path"
    cwd = os.getcwd()
    if cwd in sys.path or "" in sys.path:
        where = f"the current directory ({cwd}) and the Python path"
    return TargetModuleNotFound(
        f"target {spec!r}: no module named {name!r} in {where}; run qw from the folder that holds "
        f"{name}, or add that folder to PYTHONPATH",
        name=name,
    )


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
            raise _not_found(spec, exc.name) from None
        raise TargetError(f"target {spec!r}: importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:  # the user's module raised at import time
        raise TargetError(
            f"target {spec!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}"
        ) from exc
