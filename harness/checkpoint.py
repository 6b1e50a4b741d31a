"""Safe checkpoint loading for mmengine on torch >= 2.6.

mmengine 0.10.7 loads its checkpoints with a plain ``torch.load``; since torch 2.6 that means
``weights_only=True``, which refuses the few non-tensor objects mmengine stores (its ``HistoryBuffer``
log statistics and the numpy arrays inside them), so ``--resume`` fails. Rather than turn safe loading
off for everything, copa-bench replaces mmengine's loader for local files with one that keeps
``weights_only=True`` and allows exactly those classes. Anything else pickled in a checkpoint is
refused with an error naming the file.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

from harness.errors import InputError

_HISTORY_STATISTICS = ("min", "max", "mean", "current")


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """The only ``getattr`` a checkpoint may call: HistoryBuffer stores its statistic methods by name."""
    if obj is HistoryBuffer and name in _HISTORY_STATISTICS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(f"refusing getattr({obj!r}, {name!r}) in a checkpoint")


def _numpy_globals() -> list:
    core = getattr(np, "_core", None) or np.core
    allowed = [np.dtype, np.ndarray]
    for module_name in ("numpy._core.multiarray", "numpy.core.multiarray"):
        allowed += [(core.multiarray._reconstruct, f"{module_name}._reconstruct"),
                    (core.multiarray.scalar, f"{module_name}.scalar")]
    allowed += [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]
    return allowed


def checkpoint_allowlist() -> list:
    """The classes and functions, beyond tensors and plain data, that an mmengine checkpoint may hold."""
    return [HistoryBuffer, (_history_buffer_getattr, "builtins.getattr"), *_numpy_globals()]


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)`` with mmengine's allowlist; a refused object is an InputError.
    ``mmap`` maps the tensors instead of reading them (for a check of what a checkpoint holds)."""
    if os.path.isdir(path):
        raise InputError(path, None, "is a directory, expected a checkpoint file")
    try:
        with torch.serialization.safe_globals(checkpoint_allowlist()):
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise InputError(path, None, "checkpoint not found") from None
    except pickle.UnpicklingError as e:
        detail = str(e).split("WeightsUnpickler error: ")[-1].split(". ")[0]
        raise InputError(path, None, f"refused to load: {detail} (not on copa-bench's checkpoint allowlist)") from None
    except (RuntimeError, EOFError) as e:  # RecursionError included
        detail = str(e).split(". ")[0].split("\n")[0][:200]
        raise InputError(path, None, f"not a readable checkpoint (truncated, or not written by torch.save: {detail})"
                         ) from None
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError, MemoryError) as e:
        # an allowed class called with arguments it refuses (OrderedDict(1), np.dtype('bogus')), or a damaged
        # archive: a bad file either way, never a traceback
        detail = str(e).split("\n")[0][:200]
        raise InputError(path, None, f"not a readable checkpoint ({type(e).__name__}: {detail})") from None


def install_safe_loader() -> None:
    """Make mmengine load local checkpoints (``load_from``, ``--resume``) through ``load_checkpoint``."""

    def load_from_local(filename: str, map_location: Any = None) -> Any:
        filename = os.path.expanduser(filename)
        if not os.path.isfile(filename):
            raise InputError(filename, None, "checkpoint not found")
        return load_checkpoint(filename, map_location=map_location)

    CheckpointLoader.register_scheme(prefixes="", loader=load_from_local, force=True)
