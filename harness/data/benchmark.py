"""The offline benchmark: a deterministic generator writing COCO, Karpathy, VQA v2, NLVR2 and RefCOCO
files (PNG images, JSON beside them) that the loaders read exactly as they read the real datasets.

Layout of a generated directory::

    images/synth_{split}_{image_id:012d}.png        scenes (COCO-style names)
    annotations/instances_{split}.json              COCO instances (+ "colour", "size" per object)
    annotations/captions_{split}.json               COCO captions (five per image)
    annotations/pta_boxes_train.json                which train images expose their boxes to PTA
    karpathy/dataset_coco.json                      Karpathy retrieval split
    vqa/v2_OpenEnded_synth_{split}_questions.json   VQA v2 questions
    vqa/v2_synth_{split}_annotations.json           VQA v2 annotations (ten answers each)
    nlvr2/{split}.json                              NLVR2 jsonl; images in nlvr2/images/{split}/
    refcoco/refs(synth).json                        RefCOCO refs (JSON instead of pickle)
    vision_pool/{split}/{class}/{class}_{n:05d}.png single-object images in ImageNet's folder-per-class layout,
    vision_pool/classes.json                        drawn apart from the caption images: the ViT initialisation
                                                    learns from their class labels, and sees no box
    tokenizer/vocab.txt                             WordPiece vocabulary trained on train text
    MANIFEST.json                                   what was generated, and the content hash
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from harness.data import language
from harness.data.scenes import CATEGORIES, COLOURS, SceneSpec, draw_scene
from harness.data.tokenizer import train_wordpiece
from harness.errors import InputError, on_sigterm_raise

SPLITS = ("train", "val", "test")
GENERATOR_VERSION = 4  # 2: NLVR2 templates True half the time; counting questions draw the count first
# 3: tiny NLVR2 has 9,000 training pairs (was 1,500, on which every model stayed at chance) and 500 val/test pairs
# 4: the vision pool (single-object images labelled by class) that the ViT initialisation trains on
POOL_SPLITS = ("train", "val")


@dataclass(frozen=True)
class Preset:
    scene: SceneSpec
    images: dict[str, int]
    nlvr2_pairs: dict[str, int]
    pool_scene: SceneSpec
    pool_per_class: dict[str, int]
    captions_per_image: int = 5
    questions_per_image: int = 3


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        scene=SceneSpec(image_size=64, min_objects=4, max_objects=7, min_object=9, max_object=17),
        images={"train": 3000, "val": 500, "test": 500},
        nlvr2_pairs={"train": 9000, "val": 500, "test": 500},
        pool_scene=SceneSpec(image_size=64, min_objects=1, max_objects=1, min_object=9, max_object=32),
        pool_per_class={"train": 100, "val": 10},
    ),
    "small": Preset(
        scene=SceneSpec(image_size=224, min_objects=6, max_objects=11, min_object=26, max_object=56),
        images={"train": 10000, "val": 1000, "test": 1000},
        nlvr2_pairs={"train": 5000, "val": 500, "test": 500},
        pool_scene=SceneSpec(image_size=224, min_objects=1, max_objects=1, min_object=26, max_object=112),
        pool_per_class={"train": 150, "val": 15},
    ),
}


def image_file_name(split: str, image_id: int) -> str:
    return f"synth_{split}_{image_id:012d}.png"


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, *stream])


def _scene_record(args: tuple[int, int, int, str]) -> dict:
    """Everything about one image, from (seed, split, index) alone."""
    seed, split_idx, index, preset_name = args
    preset = PRESETS[preset_name]
    size = preset.scene.image_size
    rng = _rng(seed, split_idx, index)
    image, objects = draw_scene(rng, preset.scene)
    captions = [language.caption(rng, objects, size)[0] for _ in range(preset.captions_per_image)]
    questions = [language.vqa_question(rng, objects, size) for _ in range(preset.questions_per_image)]
    refs = language.referring_expressions(rng, objects, size)
    return {"png": _png(image), "objects": objects, "captions": captions, "questions": questions,
            "refs": refs[: 2]}


def pool_class_dir(colour: str, category: str) -> str:
    return f"{colour}_{category}".replace(" ", "_")


def _pool_record(args: tuple[int, int, int, str, str, str]) -> bytes:
    """One single-object image of a class (colour, category), from (seed, split, index) alone."""
    seed, split_idx, index, preset_name, colour, category = args
    spec = PRESETS[preset_name].pool_scene
    rng = _rng(seed, 20 + split_idx, index)
    image, _ = draw_scene(rng, spec, category=category, colour=colour)
    return _png(image)


def _nlvr2_record(args: tuple[int, int, int, str]) -> dict:
    seed, split_idx, index, preset_name = args
    preset = PRESETS[preset_name]
    rng = _rng(seed, 10 + split_idx, index)
    left_img, left = draw_scene(rng, preset.scene)
    right_img, right = draw_scene(rng, preset.scene)
    sentence, label = language.nlvr2_statement(rng, left, right, want=index % 2 == 0)
    return {"png": (_png(left_img), _png(right_img)), "sentence": sentence, "label": label}


_LIVE_POOLS: set = set()  # worker pools of a generation under way, stopped at once when it fails or is stopped


def _worker_init() -> None:
    """Workers leave signals to the parent: Ctrl-C's SIGINT (sent to the whole process group) is ignored and
    SIGTERM ends them at once, so the parent's ``terminate()`` is all it takes and no worker prints a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _map(fn: Callable, jobs: list, workers: int) -> Iterator:
    """``map(fn, jobs)`` in order, over ``workers`` processes. A ``multiprocessing`` pool, not a
    ``ProcessPoolExecutor``: on an error, Ctrl-C or SIGTERM its workers are terminated, where the executor
    waits for the work it has queued and, when its parent is killed, leaves them running."""
    if workers <= 1:
        yield from map(fn, jobs)
        return
    pool = multiprocessing.Pool(workers, initializer=_worker_init)
    _LIVE_POOLS.add(pool)
    try:
        yield from pool.imap(fn, jobs, chunksize=64)
    except BaseException:  # GeneratorExit too: the consumer stopped early
        pool.terminate()
        raise
    else:
        pool.close()
    finally:
        pool.join()
        _LIVE_POOLS.discard(pool)


def _stop_workers() -> None:
    """Terminate every worker pool still running (the generator holding one may not be closed yet)."""
    for pool in list(_LIVE_POOLS):
        pool.terminate()
        pool.join()
        _LIVE_POOLS.discard(pool)


class _Progress:
    def __init__(self, label: str, total: int, stream=sys.stderr) -> None:
        self.label, self.total, self.stream = label, total, stream
        self.start, self.next_pct = time.perf_counter(), 0

    def update(self, done: int) -> None:
        pct = 100 * done // max(self.total, 1)
        if pct >= self.next_pct or done == self.total:
            elapsed = time.perf_counter() - self.start
            print(f"  {self.label}: {done}/{self.total} ({elapsed:.1f}s)", file=self.stream, flush=True)
            self.next_pct = pct + 25


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=None, separators=(",", ":"), sort_keys=True) + "\n", encoding="utf-8")


def content_hash(root: str | os.PathLike, exclude: tuple[str, ...] = ("MANIFEST.json",)) -> str:
    """sha256 over every file's relative path and bytes, in sorted path order."""
    root = Path(root)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel in exclude:
            continue
        digest.update(rel.encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _coco_info(split: str) -> dict:
    return {"description": f"copa-bench offline benchmark, {split} split", "version": str(GENERATOR_VERSION),
            "year": 2026, "contributor": "copa-bench generator", "date_created": "2026-01-01"}


def _generate(root: Path, preset_name: str, seed: int, pta_fraction: float, workers: int) -> dict:
    preset = PRESETS[preset_name]
    size = preset.scene.image_size
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CATEGORIES)]
    cat_id = {c["name"]: c["id"] for c in categories}
    (root / "images").mkdir(parents=True)
    karpathy, refs, train_text = [], [], []
    next_image_id, next_ann_id, next_caption_id, next_ref_id, next_sent_id = 1, 1, 1, 1, 1
    counts: dict[str, dict[str, int]] = {}
    train_image_ids: list[int] = []

    for split_idx, split in enumerate(SPLITS):
        n = preset.images[split]
        images, instances, captions, questions, answers = [], [], [], [], []
        progress = _Progress(f"{split} images", n)
        jobs = [(seed, split_idx, i, preset_name) for i in range(n)]
        for i, rec in enumerate(_map(_scene_record, jobs, workers), 1):
            image_id = next_image_id
            next_image_id += 1
            file_name = image_file_name(split, image_id)
            (root / "images" / file_name).write_bytes(rec["png"])
            images.append({"id": image_id, "file_name": file_name, "height": size, "width": size,
                           "license": 0, "coco_url": "", "date_captured": ""})
            ann_ids = []
            for obj in rec["objects"]:
                instances.append({"id": next_ann_id, "image_id": image_id, "category_id": cat_id[obj.category],
                                  "bbox": obj.bbox, "area": obj.area, "iscrowd": 0, "segmentation": [],
                                  "colour": obj.colour, "size": obj.size_word})
                ann_ids.append(next_ann_id)
                next_ann_id += 1
            sentences = []
            for text in rec["captions"]:
                captions.append({"id": next_caption_id, "image_id": image_id, "caption": text})
                sentences.append({"raw": text, "tokens": text.replace(",", "").split(), "imgid": image_id,
                                  "sentid": next_caption_id})
                next_caption_id += 1
            karpathy.append({"filepath": "images", "filename": file_name, "imgid": image_id, "cocoid": image_id,
                             "split": split, "sentids": [s["sentid"] for s in sentences], "sentences": sentences})
            for q_idx, q in enumerate(rec["questions"]):
                qid = image_id * 10 + q_idx
                questions.append({"image_id": image_id, "question": q["question"], "question_id": qid})
                answers.append({"question_id": qid, "image_id": image_id, "question_type": q["question_type"],
                                "answer_type": q["answer_type"], "multiple_choice_answer": q["answer"],
                                "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1}
                                            for k, a in enumerate(q["answers"])]})
            for obj_idx, sents in rec["refs"]:
                sent_recs = []
                for s in sents:
                    sent_recs.append({"raw": s, "sent": s, "tokens": s.split(), "sent_id": next_sent_id})
                    next_sent_id += 1
                refs.append({"ref_id": next_ref_id, "ann_id": ann_ids[obj_idx], "image_id": image_id,
                             "split": split, "file_name": file_name,
                             "category_id": cat_id[rec["objects"][obj_idx].category],
                             "sent_ids": [s["sent_id"] for s in sent_recs], "sentences": sent_recs})
                next_ref_id += 1
            if split == "train":
                train_image_ids.append(image_id)
                train_text += rec["captions"] + [q["question"] for q in rec["questions"]]
                train_text += [s for _, sents in rec["refs"] for s in sents]
            progress.update(i)
        _write_json(root / "annotations" / f"instances_{split}.json",
                    {"info": _coco_info(split), "licenses": [], "images": images, "annotations": instances,
                     "categories": categories})
        _write_json(root / "annotations" / f"captions_{split}.json",
                    {"info": _coco_info(split), "licenses": [], "images": images, "annotations": captions})
        _write_json(root / "vqa" / f"v2_OpenEnded_synth_{split}_questions.json",
                    {"info": _coco_info(split), "license": {}, "task_type": "Open-Ended", "data_type": "synth",
                     "data_subtype": split, "questions": questions})
        _write_json(root / "vqa" / f"v2_synth_{split}_annotations.json",
                    {"info": _coco_info(split), "license": {}, "data_type": "synth", "data_subtype": split,
                     "annotations": answers})

        n_pairs = preset.nlvr2_pairs[split]
        nlvr_dir = root / "nlvr2" / "images" / split
        nlvr_dir.mkdir(parents=True)
        lines = []
        progress = _Progress(f"{split} nlvr2 pairs", n_pairs)
        jobs = [(seed, split_idx, i, preset_name) for i in range(n_pairs)]
        for i, rec in enumerate(_map(_nlvr2_record, jobs, workers)):
            base = f"{split}-{i}-0"
            for side, png in enumerate(rec["png"]):
                (nlvr_dir / f"{base}-img{side}.png").write_bytes(png)
            if split == "train":
                train_text.append(rec["sentence"])
            lines.append(json.dumps({"identifier": f"{base}-0", "sentence": rec["sentence"],
                                     "label": str(rec["label"]), "left_url": f"{base}-img0.png",
                                     "right_url": f"{base}-img1.png", "writer": "synth", "synset": "shapes",
                                     "query": "shapes", "validation": {}, "extra_validations": {}},
                                    sort_keys=True))
            progress.update(i + 1)
        (root / "nlvr2" / f"{split}.json").write_text("\n".join(lines) + "\n", encoding="utf-8")
        counts[split] = {"images": n, "objects": len(instances), "captions": len(captions),
                         "vqa_questions": len(questions), "nlvr2_pairs": n_pairs,
                         "refs": sum(r["split"] == split for r in refs)}

    _write_json(root / "karpathy" / "dataset_coco.json", {"dataset": "synth", "images": karpathy})
    _write_json(root / "refcoco" / "refs(synth).json", refs)
    rng = _rng(seed, 99)
    n_exposed = int(round(pta_fraction * len(train_image_ids)))
    exposed = sorted(int(i) for i in rng.choice(train_image_ids, size=n_exposed, replace=False))
    _write_json(root / "annotations" / "pta_boxes_train.json",
                {"fraction": pta_fraction, "split": "train", "image_ids": exposed})
    train_wordpiece(train_text, root / "tokenizer")
    counts["vision_pool"] = _vision_pool(root / "vision_pool", preset_name, seed, workers)
    return counts


def _vision_pool(root: Path, preset_name: str, seed: int, workers: int) -> dict[str, int]:
    """Single-object images of every (colour, category) class, ImageNet's folder-per-class layout. They are
    drawn from their own random streams, so they share no image with the caption splits, and no box is
    written: the ViT initialisation learns from class labels, as an ImageNet one does, and PTA's boxes on a
    share of the caption training images stay the only box signal a model ever sees."""
    preset = PRESETS[preset_name]
    classes = [(colour, category) for colour in COLOURS for category in CATEGORIES]
    counts = {}
    for split_idx, split in enumerate(POOL_SPLITS):
        per_class = preset.pool_per_class[split]
        jobs = [(seed, split_idx, i, preset_name, *classes[i % len(classes)])
                for i in range(per_class * len(classes))]
        progress = _Progress(f"{split} vision pool images", len(jobs))
        for i, png in enumerate(_map(_pool_record, jobs, workers)):
            name = pool_class_dir(*classes[i % len(classes)])
            (root / split / name).mkdir(parents=True, exist_ok=True)
            (root / split / name / f"{name}_{i // len(classes):05d}.png").write_bytes(png)
            progress.update(i + 1)
        counts[split] = len(jobs)
    _write_json(root / "classes.json", [{"dir": pool_class_dir(colour, category), "colour": colour,
                                         "category": category} for colour, category in classes])
    return counts


def make_benchmark(
    out: str | os.PathLike,
    preset: str = "tiny",
    seed: int = 0,
    pta_fraction: float = 0.05,
    workers: int | None = None,
    force: bool = False,
) -> str:
    """Generate the benchmark into ``out`` and return its content hash.

    Everything is written into a hidden sibling directory that is renamed to ``out`` only when
    complete, so a failed or interrupted run never leaves a dataset that looks whole. Ctrl-C, SIGTERM
    (raised as :class:`Terminated`) or an error remove it and stop the workers; the hidden directory of
    a run that was killed outright is removed by the next run. Asking again
    for the dataset already at ``out`` (same preset, seed and PTA share, files intact) regenerates
    nothing; anything else already at ``out`` is replaced only with ``force``.
    """
    if preset not in PRESETS:
        raise InputError(None, "--preset", f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    if not 0.0 <= pta_fraction <= 1.0:
        raise InputError(None, "--pta-fraction", f"must be between 0 and 1, got {pta_fraction}")
    if workers is not None and workers < 1:
        raise InputError(None, "--workers", f"must be at least 1, got {workers}")
    out = Path(out)
    wanted = {"generator_version": GENERATOR_VERSION, "preset": preset, "seed": seed, "pta_fraction": pta_fraction}
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        existing = _existing_digest(out, wanted)
        if existing is not None:
            _remove_stale_partials(out)
            print(f"{out} already holds this benchmark, intact; nothing to generate", file=sys.stderr)
            return existing
        if not force:
            raise InputError(out, "--out",
                             "already holds other files; remove it, choose another directory or pass --force")
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(out)
    workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"generating the '{preset}' benchmark (seed {seed}) into {out}", file=sys.stderr)
    previous = on_sigterm_raise()  # a batch scheduler's stop removes the partial directory and the workers
    try:
        counts = _generate(tmp, preset, seed, pta_fraction, workers)
        digest = content_hash(tmp)
        manifest = {"generator": "copa-bench", **wanted, "scene": asdict(PRESETS[preset].scene),
                    "categories": list(CATEGORIES), "counts": counts, "content_sha256": digest}
        _write_json(tmp / "MANIFEST.json", manifest)
        if out.exists():
            os.rename(out, old)
        os.rename(tmp, out)
    except BaseException:
        if previous is not None:  # a second SIGTERM must not cut the cleanup short
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop_workers()
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not out.exists():  # stopped between the two renames: put the old benchmark back
            os.rename(old, out)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    elif old.exists():
        old.unlink()
    return digest


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # never ours: keep it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def _remove_stale_partials(out: Path) -> None:
    """Remove the hidden ``.{out}.partial-{pid}`` directories of runs whose process is gone (killed with
    SIGKILL, or by a power cut), and their ``.{out}.old-{pid}`` once ``out`` is whole again (before that it
    may hold the only complete benchmark). A directory of a live process is another run's: it is kept."""
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(partial|old)-(\d+)")
    try:
        entries = list(out.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if not match or _pid_alive(int(match.group(2))) or entry.is_symlink() or not entry.is_dir():
            continue
        if match.group(1) == "old" and not (out / "MANIFEST.json").is_file():
            continue
        print(f"removing {entry}: left by process {match.group(2)}, which is gone", file=sys.stderr)
        shutil.rmtree(entry, ignore_errors=True)


def _existing_digest(out: Path, wanted: dict) -> str | None:
    """The hash of the complete, intact benchmark at ``out`` if it is the one asked for, else None."""
    manifest_path = out / "MANIFEST.json"
    if not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(manifest, dict) or any(manifest.get(k) != v for k, v in wanted.items()):
        return None
    digest = content_hash(out)
    return digest if digest == manifest.get("content_sha256") else None


def offline_datasets(root: str | os.PathLike, split: str) -> dict[str, dict]:
    """Dataset configs (mmengine style) for every task's files of a generated benchmark."""
    if split not in SPLITS:
        raise InputError(root, "split", f"unknown split {split!r} (choose from {', '.join(SPLITS)})")
    root = str(root)
    images = {"img_path": "images"}
    return {
        "captions": dict(type="CaptionDataset", data_root=root, ann_file=f"annotations/captions_{split}.json",
                         instances_file=f"annotations/instances_{split}.json", data_prefix=images,
                         pta_file="annotations/pta_boxes_train.json" if split == "train" else None),
        "retrieval": dict(type="RetrievalDataset", data_root=root, ann_file="karpathy/dataset_coco.json", split=split),
        "vqa": dict(type="VQADataset", data_root=root, ann_file=f"vqa/v2_OpenEnded_synth_{split}_questions.json",
                    answers_file=f"vqa/v2_synth_{split}_annotations.json",
                    image_template="images/synth_{data_subtype}_{image_id:012d}.png"),
        "nlvr2": dict(type="NLVR2Dataset", data_root=root, ann_file=f"nlvr2/{split}.json",
                      data_prefix={"img_path": f"nlvr2/images/{split}"}),
        "grounding": dict(type="ReferringDataset", data_root=root, ann_file="refcoco/refs(synth).json",
                          instances_file=f"annotations/instances_{split}.json", split=split, data_prefix=images),
    }


def read_manifest(root: str | os.PathLike) -> dict:
    """The MANIFEST.json of a complete generated benchmark (a partial one has none)."""
    from harness.data.io import load_json

    path = Path(root) / "MANIFEST.json"
    if not path.is_file():
        raise InputError(path, None, "not found: not a complete copa-bench benchmark (run 'copa-bench data make')")
    return load_json(path)
