"""Data configs: where the files of a real dataset (COCO, Karpathy, VQA v2, NLVR2, RefCOCO/+/g) are, per task and
split, so that the task configs' loaders read a published download instead of the generated benchmark.

A data config is data, never code: ``--data-config NAME`` names ``configs/data/NAME.py`` (or ``.json``), or is the
path of such a file. A ``.py`` data config is parsed, not run: only assignments of literals, ``dict(key=...)`` and
names assigned above it are allowed (anything else is refused with its line), so a config file cannot import or
call anything. Its keys::

    root = "data/coco"           # relative paths below are under it; --data replaces it
    tokenizer = None             # a directory with a vocab.txt (e.g. a BERT's); --tokenizer replaces it
    tasks = dict(                # task -> split (train, val, test) -> the dataset's files
        retrieval=dict(test=dict(ann_file="dataset_coco.json", split="test", images="")),
    )

plus helper names starting with ``_``. What a split may say depends on the task config's dataset type
(:data:`DATASET_FIELDS`); ``images`` is the image directory. Everything the task will read is checked before
anything runs: a missing file is one error naming the data config, the field and the file. Jobs on a data config
are identified by the bytes of the annotation files and the vocabulary they read (:attr:`DataConfig.sha256`), not
by the images, which the annotation files name.
"""

from __future__ import annotations

import ast
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config_namespace import KEY, settings
from harness.errors import InputError

CONFIG_DIR = Path(__file__).resolve().parent.parent.parent / "configs"
DATA_CONFIG_DIR = CONFIG_DIR / "data"
SPLITS = {"train": "train_dataloader", "val": "val_dataloader", "test": "test_dataloader"}
TOP_KEYS = ("root", "tokenizer", "tasks")

FILE, DIR, TEXT, FRACTION = "file", "directory", "text", "fraction"
_COMMON = {"ann_file": FILE, "images": DIR}
DATASET_FIELDS: dict[str, dict[str, str]] = {
    "CaptionDataset": {**_COMMON, "instances_file": FILE, "pta_file": FILE, "pta_fraction": FRACTION},
    "RetrievalDataset": {**_COMMON, "split": TEXT},
    "VQADataset": {**_COMMON, "answers_file": FILE, "image_template": TEXT},
    "NLVR2Dataset": dict(_COMMON),
    "ReferringDataset": {**_COMMON, "instances_file": FILE, "split": TEXT},
}
"""What a split of a data config may give, per dataset type of the task config's loader."""
OPTIONAL = {"pta_file", "pta_fraction", "split", "image_template"}
"""Fields a split may leave out even where the task config sets them (a default of the dataset applies)."""
REPLACED = ("ann_file", "instances_file", "pta_file", "pta_fraction", "answers_file", "image_template")
"""The task config's dataset fields that name the generated benchmark's files: a data config replaces them all."""


@dataclass
class DataConfig:
    """A parsed and checked data config: its ``source`` file, the data ``root``, the ``tokenizer`` directory
    (None: not given) and ``tasks`` (task -> split -> field -> value, relative paths already under ``root``)."""

    name: str
    source: Path
    root: Path
    tokenizer: Path | None
    tasks: dict[str, dict[str, dict[str, Any]]]
    tokenizer_field: str = "tokenizer"  # where the tokenizer was given: the file's key or --tokenizer
    _digests: dict[str, str] = field(default_factory=dict, repr=False)

    def task(self, task: str) -> dict[str, dict[str, Any]]:
        if task not in self.tasks:
            have = ", ".join(sorted(self.tasks)) or "none"
            raise InputError(self.source, f"tasks.{task}", f"no data for task {task!r} in this data config "
                             f"(it has: {have})")
        return self.tasks[task]

    def tokenizer_dir(self) -> Path:
        """The tokenizer to use: real text needs one the user chose (a BERT's vocab.txt, typically)."""
        if self.tokenizer is None:
            raise InputError(self.source, "tokenizer", "no tokenizer: pass --tokenizer DIR (a directory with a "
                             "vocab.txt, e.g. a local BERT's) or set 'tokenizer' in the data config")
        vocab = self.tokenizer / "vocab.txt" if self.tokenizer.is_dir() else self.tokenizer
        if not vocab.is_file():
            raise InputError(self.source, self.tokenizer_field, f"{vocab}: no such file (expected a directory with a "
                             "vocab.txt, or a vocab.txt)")
        return self.tokenizer

    def sha256(self, task: str, splits: list[str]) -> str:
        """The content hash of what a job reads: every annotation file of its splits and the vocabulary, by bytes
        (each file once, in a fixed order, with the field that names it)."""
        files = {f"{split}.{key}": value for split in splits for key, value in self.tasks[task][split].items()
                 if DATASET_FIELDS_ANY.get(key) == FILE}
        vocab = self.tokenizer / "vocab.txt" if self.tokenizer and self.tokenizer.is_dir() else self.tokenizer
        if vocab is not None:
            files["tokenizer"] = vocab
        digest = hashlib.sha256()
        for name in sorted(files):
            digest.update(f"{name}\0{self._file_digest(Path(files[name]))}\n".encode())
        return digest.hexdigest()

    def _file_digest(self, path: Path) -> str:
        stat = path.stat()
        key = f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}"  # a 300 MB instances file is hashed once
        if key not in self._digests:
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            self._digests[key] = digest.hexdigest()
        return self._digests[key]


DATASET_FIELDS_ANY = {key: kind for fields in DATASET_FIELDS.values() for key, kind in fields.items()}


def data_config_names() -> list[str]:
    """The registered data configs (``configs/data/``)."""
    return sorted({p.stem for p in DATA_CONFIG_DIR.glob("*.py")} | {p.stem for p in DATA_CONFIG_DIR.glob("*.json")})


def data_config_path(spec: str) -> Path:
    """The file of ``--data-config SPEC``: a registered name, else an existing ``.py`` or ``.json`` file."""
    from harness.runner import NAME

    if NAME.match(spec) and ".." not in spec:
        for suffix in (".py", ".json"):
            path = DATA_CONFIG_DIR / f"{spec}{suffix}"
            if path.is_file():
                return path
    path = Path(spec).expanduser()
    if path.suffix in (".py", ".json") and path.is_file():
        return path
    raise InputError(None, "--data-config", f"{spec!r} is neither a registered data config "
                     f"({', '.join(data_config_names())}) nor a .py or .json file")


def parse_literal_config(path: Path) -> dict[str, Any]:
    """The top-level assignments of a Python config file, evaluated as literals only (nothing is executed)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(path, None, f"cannot be read: {e}") from None
    except SyntaxError as e:
        raise InputError(path, f"line {e.lineno}", f"not valid Python: {e.msg}") from None
    names: dict[str, Any] = {}
    for i, stmt in enumerate(tree.body):
        if i == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) \
                and isinstance(stmt.value.value, str):
            continue  # the docstring
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
            raise InputError(path, f"line {stmt.lineno}", "a data config holds only 'name = value' assignments "
                             "(it is read as data, never run)")
        names[stmt.targets[0].id] = _literal(stmt.value, names, path)
    return names


def _literal(node: ast.AST, names: dict[str, Any], path: Path) -> Any:
    """A literal, ``dict(key=...)``, a list or a name assigned earlier; anything else is refused."""
    import copy

    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float, bool, type(None))):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) \
            and isinstance(node.operand.value, (int, float)) and not isinstance(node.operand.value, bool):
        return -node.operand.value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(v, names, path) for v in node.elts]
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {_literal(k, names, path): _literal(v, names, path) for k, v in zip(node.keys, node.values,
                                                                                  strict=True)}
    if isinstance(node, ast.Name) and node.id in names:
        return copy.deepcopy(names[node.id])
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" \
            and len(node.args) <= 1 and all(k.arg is not None for k in node.keywords):
        base = _literal(node.args[0], names, path) if node.args else {}
        if isinstance(base, dict):  # dict(_other, key=value): a copy of another entry with changes
            return {**base, **{k.arg: _literal(k.value, names, path) for k in node.keywords}}
    shown = ast.get_source_segment(path.read_text(encoding="utf-8"), node) or type(node).__name__
    raise InputError(path, f"line {getattr(node, 'lineno', '?')}", f"{shown[:60]!r}: only literals, dict(...) "
                     "and names assigned above are allowed (a data config is read, never run)")


def load_data_config(spec: str, root: str | os.PathLike | None = None,
                     tokenizer: str | os.PathLike | None = None) -> DataConfig:
    """Read and check ``--data-config SPEC`` (``root`` and ``tokenizer``: --data and --tokenizer, which win over
    the file's). Structure and types are checked here; the files of a task when it is applied to one."""
    from harness.data.io import load_json
    from harness.runner import task_config_path

    path = data_config_path(spec)
    raw = load_json(path) if path.suffix == ".json" else parse_literal_config(path)
    if not isinstance(raw, dict):
        raise InputError(path, None, f"expected an object of {', '.join(TOP_KEYS)}, got {type(raw).__name__}")
    for key in raw:
        if key not in TOP_KEYS and not str(key).startswith("_"):
            raise InputError(path, str(key), f"unknown key (a data config has {', '.join(TOP_KEYS)}; helper names "
                             "start with '_')")
    base = root if root is not None else raw.get("root")
    if not isinstance(base, (str, os.PathLike)) or not str(base):
        raise InputError(path, "root", "missing or not a path: set 'root' or pass --data DIR")
    base = Path(base).expanduser().absolute()
    if not base.is_dir():
        raise InputError(path, "root" if root is None else "--data", f"{base}: no such directory")
    tok = tokenizer if tokenizer is not None else raw.get("tokenizer")
    if tok is not None and not isinstance(tok, (str, os.PathLike)):
        raise InputError(path, "tokenizer", f"expected a path, got {type(tok).__name__}")
    # --tokenizer is a path from here; the file's own, like its other paths, is under root
    tok_path = None if tok is None else Path(tok).expanduser().absolute() if tokenizer is not None \
        else _under(base, str(tok))
    tasks = raw.get("tasks")
    if not isinstance(tasks, dict) or not tasks:
        raise InputError(path, "tasks", "missing or empty: expected task -> split -> files")
    checked: dict[str, dict[str, dict[str, Any]]] = {}
    for task, splits in tasks.items():
        try:
            task_config_path(task)
        except InputError as e:
            raise InputError(path, f"tasks.{task}", e.message) from None
        if task == "vision_pretrain":
            raise InputError(path, f"tasks.{task}", "reads the generated benchmark's image pool only (give "
                             "pre-training a timm ViT with --vision-init FILE instead)")
        if not isinstance(splits, dict) or not splits:
            raise InputError(path, f"tasks.{task}", "expected split -> files (train, val, test)")
        checked[task] = {}
        for split, files in splits.items():
            where = f"tasks.{task}.{split}"
            if split not in SPLITS:
                raise InputError(path, where, f"unknown split (use {', '.join(SPLITS)})")
            if not isinstance(files, dict):
                raise InputError(path, where, f"expected field -> value, got {type(files).__name__}")
            checked[task][split] = {key: _checked_value(path, f"{where}.{key}", key, value, base)
                                    for key, value in files.items()}
    return DataConfig(name=path.stem, source=path, root=base, tokenizer=tok_path, tasks=checked,
                      tokenizer_field="tokenizer" if tokenizer is None else "--tokenizer")


def _under(root: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else root / path


def _checked_value(path: Path, where: str, key: str, value: Any, root: Path) -> Any:
    kind = DATASET_FIELDS_ANY.get(key)
    if kind is None:
        raise InputError(path, where, f"unknown field (known: {', '.join(sorted(DATASET_FIELDS_ANY))})")
    if kind == FRACTION:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise InputError(path, where, f"expected a number from 0 to 1, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise InputError(path, where, f"expected a string, got {type(value).__name__}")
    if kind == TEXT:
        return value
    return str(_under(root, value)) if value else str(root)


def apply_data_config(cfg, task: str, data: DataConfig, testing: bool) -> None:
    """Point the task config's loaders (and a VQA head's answer vocabulary) at the data config's files, after
    checking that every file and directory the job reads exists. A split the data config leaves out drops its
    loader where the job can do without it (validation; training when testing, testing when training)."""
    from harness.data.io import check_regular_file

    spec = data.task(task)
    data.tokenizer_dir()  # every task tokenizes text
    needed = "test" if testing else "train"
    for split, loader in SPLITS.items():
        where = f"tasks.{task}.{split}"
        if not cfg.get(loader):
            if split in spec:
                raise InputError(data.source, where, f"task {task!r} has no {split} split")
            continue
        if split not in spec:
            if split == needed:
                raise InputError(data.source, where, f"missing: {'testing' if testing else 'training'} {task!r} "
                                 f"reads its {split} split")
            _drop(cfg, split)
            continue
        dataset = cfg[loader].dataset
        if dataset.type not in DATASET_FIELDS:
            raise InputError(data.source, where, f"{task!r} reads {dataset.type}, which no data config describes")
        allowed = DATASET_FIELDS[dataset.type]
        files = spec[split]
        for key in files:
            if key not in allowed:
                raise InputError(data.source, f"{where}.{key}", f"not a field of {task!r}'s {split} data "
                                 f"({dataset.type}: {', '.join(allowed)})")
        for key in allowed:
            wanted = key in _COMMON or dataset.get(key) is not None and key not in OPTIONAL
            if wanted and key not in files:
                raise InputError(data.source, f"{where}.{key}", f"missing ({dataset.type} reads it)")
        for key, value in files.items():
            if allowed[key] == FILE:
                if not os.path.isfile(value):
                    raise InputError(data.source, f"{where}.{key}", f"{value}: no such file")
                check_regular_file(value, f"{where}.{key}")
            elif allowed[key] == DIR and not os.path.isdir(value):
                raise InputError(data.source, f"{where}.{key}", f"{value}: no such directory")
        for key in REPLACED:
            dataset.pop(key, None)
        dataset.update({k: v for k, v in files.items() if k != "images"})
        dataset.data_prefix = dict(img_path=files["images"])
    task_model = settings(cfg).get("task_model") or {}
    if "answers_file" in task_model:  # the answer vocabulary is the training annotations', also when testing
        answers = spec.get("train", {}).get("answers_file")
        if answers is None:
            raise InputError(data.source, f"tasks.{task}.train.answers_file", "missing: the answer vocabulary is "
                             "built from the training annotations, also when testing")
        if not os.path.isfile(answers):
            raise InputError(data.source, f"tasks.{task}.train.answers_file", f"{answers}: no such file")
        task_model["answers_file"] = answers
    used = [s for s in SPLITS if s in spec and cfg.get(SPLITS[s])]
    cfg[KEY] = dict(settings(cfg), data_config=dict(name=data.name, root=str(data.root),
                                                     sha256=data.sha256(task, used)))


def _drop(cfg, split: str) -> None:
    """Remove a split's loader and everything mmengine builds with it."""
    if split == "val":
        cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None
        if cfg.get("train_cfg"):
            cfg.train_cfg.pop("val_interval", None)
    elif split == "train":
        cfg.train_dataloader = cfg.train_cfg = cfg.optim_wrapper = cfg.param_scheduler = None
    else:
        cfg.test_dataloader = cfg.test_evaluator = cfg.test_cfg = None
