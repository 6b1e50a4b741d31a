"""Strict readers for the annotation files: every failure is an InputError naming the file and field."""

from __future__ import annotations

import json
import math
import os
import pickle
from collections.abc import Mapping
from typing import Any

from harness.errors import InputError


def load_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a missing or malformed file is an InputError with the line and column."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise InputError(path, None, "file not found") from None
    except json.JSONDecodeError as e:
        raise InputError(path, f"line {e.lineno} column {e.colno}", f"malformed JSON: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise InputError(path, None, f"not UTF-8 text: {e.reason}") from None
    except RecursionError:
        raise InputError(path, None, "malformed JSON: nested too deeply") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise InputError(path, None, f"malformed JSON: {str(e)[:100]}") from None
    except (IsADirectoryError, NotADirectoryError):
        raise InputError(path, None, "not a file") from None


def load_jsonl(path: str | os.PathLike) -> list[dict]:
    """Parse a JSON-lines file (blank lines allowed); each bad line is reported by number."""
    rows = []
    try:
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise InputError(path, f"line {lineno}", f"not UTF-8 text: {e.reason}") from None
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise InputError(path, f"line {lineno}", f"malformed JSON: {e.msg}") from None
                except RecursionError:
                    raise InputError(path, f"line {lineno}", "malformed JSON: nested too deeply") from None
                except ValueError as e:  # e.g. an integer of more digits than Python converts
                    raise InputError(path, f"line {lineno}", f"malformed JSON: {str(e)[:100]}") from None
                if not isinstance(row, dict):
                    raise InputError(path, f"line {lineno}", "expected a JSON object")
                rows.append(row)
    except FileNotFoundError:
        raise InputError(path, None, "file not found") from None
    except (IsADirectoryError, NotADirectoryError):
        raise InputError(path, None, "not a file") from None
    return rows


def check_regular_file(path: str | os.PathLike, what: str = "image") -> None:
    """Refuse a path that exists but is not a regular file (a FIFO would block the reader forever, a device
    would be read without end); a missing file is left to the reader, which says so."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise InputError(path, what, f"cannot be read: {e.strerror}") from None
    if not stat.S_ISREG(mode):
        kind = "a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a directory" if stat.S_ISDIR(mode) else \
            "not a regular file"
        raise InputError(path, what, f"is {kind}, expected a regular file")


class _DataOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain data (dicts, lists, strings, numbers) and refuses every class, so a pickle
    such as RefCOCO's refs(unc).p cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain data is allowed")


def load_plain_pickle(path: str | os.PathLike) -> Any:
    try:
        with open(path, "rb") as f:
            return _DataOnlyUnpickler(f).load()
    except FileNotFoundError:
        raise InputError(path, None, "file not found") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, OverflowError) as e:
        raise InputError(path, None, f"not a plain-data pickle: {str(e)[:100]}") from None
    except RecursionError:
        raise InputError(path, None, "not a plain-data pickle: nested too deeply") from None


def field(obj: Any, key: str, path: str | os.PathLike, where: str, kind: type | tuple[type, ...] | None = None):
    """``obj[key]``, or an InputError naming ``where.key`` when it is missing or of the wrong type."""
    name = f"{where}.{key}" if where else key
    if not isinstance(obj, Mapping):
        raise InputError(path, where or "<top level>", f"expected a JSON object, got {type(obj).__name__}")
    if key not in obj:
        raise InputError(path, name, "missing")
    value = obj[key]
    if kind is not None and (not isinstance(value, kind) or isinstance(value, bool) and bool not in _tuple(kind)):
        want = " or ".join(t.__name__ for t in _tuple(kind))
        raise InputError(path, name, f"expected {want}, got {type(value).__name__}")
    return value


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def check_box(box: Any, path: str | os.PathLike, where: str, image_size: tuple[int, int]) -> list[float]:
    """A COCO ``[x, y, w, h]`` box with positive area that lies at least partly inside the image."""
    if (
        not isinstance(box, list)
        or len(box) != 4
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
    ):
        raise InputError(path, where, f"expected [x, y, width, height] numbers, got {box!r}")
    try:
        x, y, w, h = (float(v) for v in box)
    except OverflowError:
        raise InputError(path, where, "box has a number too large for a float") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise InputError(path, where, f"box {box} is not finite (NaN or Infinity)")
    if w <= 0 or h <= 0:
        raise InputError(path, where, f"box {box} has zero area")
    height, width = image_size
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise InputError(path, where, f"box {box} lies outside the {width}x{height} image")
    return [x, y, w, h]


MAX_IMAGE_SIDE = 1 << 16  # the most any image format PIL writes allows on a side (JPEG's limit); keeps sizes sane


def image_side(img: Any, key: str, path: str | os.PathLike, where: str) -> int:
    """``img[key]`` (``height`` or ``width``) as a positive whole number of pixels; NaN, a float, a bool or
    a size of zero would otherwise reach the patch grid (a 0-high image has no patches: "nan%")."""
    value = field(img, key, path, where, int)
    if not 0 < value <= MAX_IMAGE_SIDE:
        raise InputError(path, f"{where}.{key}", f"must be between 1 and {MAX_IMAGE_SIDE} pixels, got {value}")
    return value


def check_image_size(image_path: str | os.PathLike, size: tuple[int, int], declared: tuple[int, int],
                     source: str | os.PathLike | None) -> None:
    """Refuse an image whose decoded ``(height, width)`` differs from the size its annotation file declares:
    the boxes were checked against, and are scaled from, the declared size."""
    for key, actual, want in (("height", size[0], declared[0]), ("width", size[1], declared[1])):
        if actual != want:
            said = f"{os.fspath(source)} declares" if source else "the annotation declares"
            raise InputError(image_path, key, f"the image is {actual} pixels, {said} {want}")
