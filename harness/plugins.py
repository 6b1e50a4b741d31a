"""Plugins: a user's own reducer, model, task, metric or chance predictor, registered from their own package.

A plugin is a Python module the user chose to import (``copa-bench --plugin MODULE``, or mmengine's
``custom_imports`` in a suite or task config): importing it registers its classes in copa-bench's registries
(``copa.registry.MODELS``, ``harness.registry.METRICS``/``CHANCE``...), its named models (:func:`register_model`)
and its task configs (:func:`harness.taskspec.register_task_dir`). It runs with the user's rights, like any
code they import; copa-bench imports only module *names* given on the command line or in a config file the user
runs, never a path or a name found in data (docs/hostile-inputs.md, docs/extending.md).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from types import ModuleType
from typing import Any

from harness.errors import InputError

MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_LOADED: list[str] = []


def load_plugin(module: str, flag: str = "--plugin") -> ModuleType:
    """Import a plugin module by its dotted name (it must be importable: installed, or on ``PYTHONPATH``)."""
    if not isinstance(module, str) or not MODULE_NAME.match(module):
        raise InputError(None, flag, f"{module!r} is not a module name (dotted Python identifiers, no path)")
    try:
        loaded = importlib.import_module(module)
    except ImportError as e:
        raise InputError(None, flag, f"cannot import plugin {module!r} ({e}); install it or add its parent "
                         "directory to PYTHONPATH") from None
    if module not in _LOADED:
        _LOADED.append(module)
    return loaded


def load_plugins(modules: Iterable[str], flag: str = "--plugin") -> None:
    """Import each plugin in order (a suite's worker processes get the same list)."""
    for module in modules:
        load_plugin(module, flag)


def loaded_plugins() -> tuple[str, ...]:
    """The plugins this process imported through :func:`load_plugin`, in order."""
    return tuple(_LOADED)


def register_model(name: str, method: dict[str, Any], force: bool = False) -> None:
    """Make ``name`` a model every command accepts (``--model``, suites' ``models``, ``profile --models``):
    ``method`` is an entry of ``zoo.build.METHODS`` (reducer, reduction layers, keep ratio, losses...), built over
    the shared skeleton at every scale."""
    from copa.registry import MODELS
    from harness.runner import check_name
    from zoo import METHODS, build_model

    check_name(name, "model")
    if name in METHODS and not force:
        raise InputError(None, "model", f"model {name!r} is already defined (pass force=True to replace it)")
    METHODS[name] = dict(method)

    def builder(scale: str = "tiny", **overrides: Any):
        return build_model(name, scale, **overrides)

    builder.__name__ = builder.__qualname__ = f"build_{name}"
    builder.__doc__ = f"Build the plugin model {name!r}; see :func:`zoo.build.build_model`."
    MODELS.register_module(name=name, module=builder, force=True)
