"""mmengine datasets over the real published annotation formats.

Each class reads the files a user downloads (COCO captions/instances, the Karpathy split, VQA v2,
NLVR2 jsonl, RefCOCO refs) and the offline benchmark written in the same formats. Loading checks
every record it uses; a bad one is an InputError naming the file and the field.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

import numpy as np
from mmengine.dataset import BaseDataset

import harness.data.transforms  # noqa: F401  (registers the transforms)
from copa.patch_labels import mentioned_categories
from harness.data.io import check_box, check_image_size, field, image_side, load_json, load_jsonl, load_plain_pickle
from harness.errors import InputError
from harness.registry import DATASETS, TRANSFORMS


def _join(*parts: str) -> str:
    return os.path.join(*[p for p in parts if p])


def _image_table(path: str, images: object) -> dict[int, dict]:
    """A COCO file's ``images`` by id. A repeated id is refused (the later entry would silently replace the
    earlier one), and so is a size that is not a positive whole number (a 0-high image has no patches)."""
    if not isinstance(images, list):
        raise InputError(path, "images", "expected a list")
    table: dict[int, dict] = {}
    first: dict[int, int] = {}
    for i, img in enumerate(images):
        where = f"images[{i}]"
        image_id = field(img, "id", path, where, int)
        if image_id in first:
            raise InputError(path, f"{where}.id", f"duplicate image id {image_id} (also images[{first[image_id]}])")
        first[image_id] = i
        table[image_id] = {
            "file_name": field(img, "file_name", path, where, str),
            "height": image_side(img, "height", path, where),
            "width": image_side(img, "width", path, where),
        }
    return table


def _unique_id(seen: dict, value: object, path: str, where: str, what: str) -> None:
    """Refuse an id already seen in the same list, where a table keyed by it would keep only the later entry."""
    if value in seen:
        raise InputError(path, where, f"duplicate {what} {value!r} (also {seen[value]})")
    seen[value] = where.rsplit(".", 1)[0]


def _pta_image_ids(path: str) -> set[int]:
    """The image ids of a PTA box file (``annotations/pta_boxes_train.json``), each a JSON integer: a string,
    a float or a bool would otherwise be coerced by ``int()`` (``"7"``, ``7.9`` and ``true`` all naming some
    image) and a list would be a traceback."""
    ids = set()
    for i, value in enumerate(field(load_json(path), "image_ids", path, "", list)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise InputError(path, f"image_ids[{i}]", f"expected an integer image id, got {type(value).__name__} "
                             f"{json.dumps(value)[:40]}")
        ids.add(value)
    return ids


def load_coco_instances(path: str) -> tuple[dict[int, str], dict[int, dict], dict[int, list[dict]]]:
    """Categories, images and per-image objects of a COCO instances file, every box checked."""
    data = load_json(path)
    images = _image_table(path, field(data, "images", path, "", list))
    categories = {}
    category_seen: dict = {}
    for i, cat in enumerate(field(data, "categories", path, "", list)):
        category_id = field(cat, "id", path, f"categories[{i}]", int)
        _unique_id(category_seen, category_id, path, f"categories[{i}].id", "category id")
        categories[category_id] = field(cat, "name", path, f"categories[{i}]", str)
    objects: dict[int, list[dict]] = {image_id: [] for image_id in images}
    ann_seen: dict = {}
    for i, ann in enumerate(field(data, "annotations", path, "", list)):
        where = f"annotations[{i}]"
        image_id = field(ann, "image_id", path, where, int)
        if "id" in ann:  # referring expressions and object attributes find their object by it
            _unique_id(ann_seen, field(ann, "id", path, where, int), path, f"{where}.id", "annotation id")
        if image_id not in images:
            raise InputError(path, f"{where}.image_id", f"image {image_id} is not in 'images'")
        category_id = field(ann, "category_id", path, where, int)
        if category_id not in categories:
            raise InputError(path, f"{where}.category_id", f"category {category_id} is not in 'categories'")
        img = images[image_id]
        box = check_box(field(ann, "bbox", path, where), path, f"{where}.bbox", (img["height"], img["width"]))
        objects[image_id].append({"bbox": box, "category_id": category_id, "id": ann.get("id"), "index": i})
    return categories, images, objects


class _CheckDeclaredSize:
    """A pipeline step after ``LoadImage``: an image whose size differs from its annotation's ``height`` and
    ``width`` is refused (its boxes were checked against, and are scaled from, the declared size)."""

    def __init__(self, source: str | None) -> None:
        self.source = source

    def __call__(self, results: dict) -> dict:
        if "height" in results and "width" in results and "ori_shape" in results and "img_path" in results:
            check_image_size(results["img_path"], results["ori_shape"], (results["height"], results["width"]),
                             self.source)
        return results


class _AnnotationDataset(BaseDataset):
    """Common ground: the image directory comes from ``data_prefix['img_path']`` under ``data_root``;
    pipeline steps given as configs are built from copa-bench's transform registry.

    ``serialize_data`` defaults to False: mmengine packs the sample list into one array so that dataloader
    worker processes share it, and runs a full garbage collection for each dataset it packs (0.25 s a time
    here); the configs load in the main process (``num_workers=0``). Set it with ``num_workers > 0``."""

    def __init__(self, *args, data_prefix: Mapping | None = None, pipeline: Sequence = (),
                 serialize_data: bool = False, **kwargs) -> None:
        steps = [TRANSFORMS.build(t) if isinstance(t, Mapping) else t for t in pipeline]
        super().__init__(*args, data_prefix=dict(data_prefix or {"img_path": ""}), pipeline=steps,
                         serialize_data=serialize_data, **kwargs)
        transforms = self.pipeline.transforms
        for k in reversed(range(len(transforms))):  # right after each image is read, before boxes are scaled
            if isinstance(transforms[k], harness.data.transforms.LoadImage):
                transforms.insert(k + 1, _CheckDeclaredSize(self._size_source()))

    def _size_source(self) -> str | None:
        """The annotation file that declares each sample's ``height`` and ``width``."""
        return self.ann_file

    def _resolve(self, path: str | None) -> str | None:
        if path is None or os.path.isabs(path) or not self.data_root:
            return path
        return os.path.join(self.data_root, path)

    def _image_path(self, *name: str) -> str:
        return _join(self.data_prefix.get("img_path", ""), *name)


def _check_split(path: str, split: str, available: Sequence[str]) -> None:
    if split not in available:
        raise InputError(path, "split", f"unknown split {split!r} (this file has: {', '.join(sorted(available))})")


@DATASETS.register_module()
class CaptionDataset(_AnnotationDataset):
    """Image-caption pairs for pre-training, one sample per caption (COCO captions format).

    With ``instances_file`` every sample carries the boxes of the objects its caption mentions
    (matched by category name, see ``copa.patch_labels``); ``pta_file`` lists the images whose boxes
    PTA may use. ``pta_fraction`` instead draws that share of the captioned images with ``pta_seed``
    (for the ablation over how many images carry boxes).
    """

    def __init__(self, *args, instances_file: str | None = None, pta_file: str | None = None,
                 pta_fraction: float | None = None, pta_seed: int = 0, **kwargs) -> None:
        if pta_fraction is not None and not 0.0 <= pta_fraction <= 1.0:
            raise InputError(None, "pta_fraction", f"must be between 0 and 1, got {pta_fraction}")
        self.instances_file = instances_file
        self.pta_file = pta_file
        self.pta_fraction = pta_fraction
        self.pta_seed = pta_seed
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> list[dict]:
        path = self.ann_file
        data = load_json(path)
        images = _image_table(path, field(data, "images", path, "", list))
        categories, objects = {}, {}
        if self.instances_file:
            inst_path = self._resolve(self.instances_file)
            categories, inst_images, objects = load_coco_instances(inst_path)
            missing = set(images) - set(inst_images)
            if missing:
                raise InputError(inst_path, "images",
                                 f"{len(missing)} captioned images have no entry, e.g. {min(missing)}")
            for image_id, img in images.items():  # the boxes were checked against the instances file's size
                inst = inst_images[image_id]
                if (inst["height"], inst["width"]) != (img["height"], img["width"]):
                    raise InputError(inst_path, "images", f"image {image_id} is {inst['width']}x{inst['height']} here "
                                     f"but {img['width']}x{img['height']} in {path}")
        exposed: set[int] = set()
        if self.pta_fraction is not None:
            ids = np.random.default_rng(self.pta_seed).permutation(sorted(images))
            exposed = {int(i) for i in ids[: int(round(self.pta_fraction * len(ids)))]}
        elif self.pta_file:
            pta_path = self._resolve(self.pta_file)
            exposed = _pta_image_ids(pta_path)
        samples = []
        for i, ann in enumerate(field(data, "annotations", path, "", list)):
            where = f"annotations[{i}]"
            image_id = field(ann, "image_id", path, where, int)
            if image_id not in images:
                raise InputError(path, f"{where}.image_id", f"image {image_id} is not in 'images'")
            text = field(ann, "caption", path, where, str).strip()
            if not text:
                raise InputError(path, f"{where}.caption", "empty caption")
            img = images[image_id]
            sample = {"img_path": self._image_path(img["file_name"]), "image_id": image_id, "text": text,
                      "height": img["height"], "width": img["width"], "pta": image_id in exposed}
            if self.instances_file:
                wanted = mentioned_categories(text, categories)
                sample["relevant_boxes"] = [o["bbox"] for o in objects[image_id] if o["category_id"] in wanted]
            samples.append(sample)
        return samples


@DATASETS.register_module()
class ObjectLabelDataset(_AnnotationDataset):
    """Object labels of a COCO instances file, for the tiny scale's stand-in for ImageNet pre-training of the ViT.

    Per image: multi-hot ``labels`` over which categories are present and, where the objects carry an
    ``attribute`` (the benchmark's ``colour``), which attribute values and which (value, category) pairs; and per
    object its box (``object_boxes``) and ``object_targets`` ``[category index, attribute value index]`` (-1 for
    an object without the attribute), which teach the patch tokens under each box what is there.

    The class list is the file's categories then, sorted, the attribute values and the pairs; ``classes``
    fixes it when a split must share another's (validation uses the training split's).
    """

    def __init__(self, *args, attribute: str | None = "colour", classes: Sequence[str] | None = None,
                 **kwargs) -> None:
        self.attribute = attribute
        self.fixed_classes = list(classes) if classes is not None else None
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> list[dict]:
        path = self.ann_file
        categories, images, objects = _attributed_objects(path, self.attribute)
        classes = self.fixed_classes or object_label_classes(path, self.attribute)
        self.classes = classes
        self.categories, self.values = object_label_groups(classes, [categories[c] for c in sorted(categories)])
        index = {name: i for i, name in enumerate(classes)}
        category_index = {name: i for i, name in enumerate(self.categories)}
        value_index = {name: i for i, name in enumerate(self.values)}
        samples = []
        for image_id, img in images.items():
            labels = np.zeros(len(classes), dtype=np.float32)
            boxes, targets = [], []
            for o in objects[image_id]:
                category, value = categories[o["category_id"]], o["value"]
                names = (category,) if value is None else (category, value, f"{value} {category}")
                for name in names:
                    if name in index:
                        labels[index[name]] = 1.0
                boxes.append(o["bbox"])
                targets.append([category_index.get(category, -1), value_index.get(value, -1)])
            samples.append({"img_path": self._image_path(img["file_name"]), "image_id": image_id,
                            "labels": labels, "object_boxes": boxes,
                            "object_targets": np.asarray(targets, dtype=np.int64).reshape(-1, 2)})
        return samples


def _attributed_objects(path: str, attribute: str | None) -> tuple[dict[int, str], dict[int, dict], dict[int, list]]:
    """:func:`load_coco_instances` with each object's ``attribute`` value as ``value`` (None where it has none)."""
    data = load_json(path)
    categories, images, objects = load_coco_instances(path)
    anns = field(data, "annotations", path, "", list)
    for objs in objects.values():
        for o in objs:  # by position: annotations without an id must not share one record's attribute
            value = anns[o["index"]].get(attribute) if attribute else None
            o["value"] = value if isinstance(value, str) and value else None
    return categories, images, objects


def image_object_names(path: str, attribute: str | None) -> tuple[dict[int, set[str]], dict[int, dict]]:
    """Per image of a COCO instances file, the names present: categories and, where objects carry
    ``attribute``, each value and each "value category" pair. Also the file's image table."""
    categories, images, objects = _attributed_objects(path, attribute)
    names: dict[int, set[str]] = {image_id: set() for image_id in images}
    for image_id, objs in objects.items():
        for o in objs:
            category = categories[o["category_id"]]
            names[image_id].add(category)
            if o["value"] is not None:
                names[image_id].update((o["value"], f"{o['value']} {category}"))
    return names, images


def _is_pair(name: str, category_names: Sequence[str]) -> bool:
    return name not in category_names and any(name.endswith(" " + c) for c in category_names)


def object_label_classes(path: str, attribute: str | None = "colour") -> list[str]:
    """The class list of :class:`ObjectLabelDataset` for an instances file (categories, then sorted attribute
    values and pairs)."""
    categories, _, _ = load_coco_instances(path)
    names, _ = image_object_names(path, attribute)
    category_names = [categories[c] for c in sorted(categories)]
    seen = set().union(*names.values()) - set(category_names)
    values = sorted(v for v in seen if not _is_pair(v, category_names))
    pairs = sorted(v for v in seen if _is_pair(v, category_names))
    return category_names + values + pairs


def object_label_groups(classes: Sequence[str], category_names: Sequence[str]) -> tuple[list[str], list[str]]:
    """The categories and the attribute values of a class list of :func:`object_label_classes` (the per-object
    heads' two vocabularies)."""
    categories = [c for c in classes if c in category_names]
    values = [c for c in classes if c not in category_names and not _is_pair(c, category_names)]
    return categories, values


@DATASETS.register_module()
class RetrievalDataset(_AnnotationDataset):
    """Image-text retrieval over a Karpathy split file (``dataset_coco.json`` / ``dataset_flickr30k.json``).

    One sample per image with all its captions; ``texts``, ``txt2img`` and ``img2txt`` give the text
    gallery and the ground truth. ``split='train'`` includes Karpathy's ``restval``.
    """

    def __init__(self, *args, split: str = "test", **kwargs) -> None:
        self.split = split
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> list[dict]:
        path = self.ann_file
        data = load_json(path)
        entries = field(data, "images", path, "", list)
        splits = {field(e, "split", path, f"images[{i}]", str) for i, e in enumerate(entries)}
        _check_split(path, self.split, splits | ({"train"} if "restval" in splits else set()))
        wanted = {self.split, "restval"} if self.split == "train" else {self.split}
        samples, self.texts, self.txt2img, self.img2txt = [], [], [], []
        for i, e in enumerate(entries):
            if e["split"] not in wanted:
                continue
            where = f"images[{i}]"
            name = field(e, "filename", path, where, str)
            texts = []
            for j, sent in enumerate(field(e, "sentences", path, where, list)):
                raw = field(sent, "raw", path, f"{where}.sentences[{j}]", str).strip()
                if not raw:
                    raise InputError(path, f"{where}.sentences[{j}].raw", "empty caption")
                texts.append(raw)
            if not texts:
                raise InputError(path, f"{where}.sentences", "an image without captions")
            img_index = len(samples)
            self.img2txt.append(list(range(len(self.texts), len(self.texts) + len(texts))))
            self.texts += texts
            self.txt2img += [img_index] * len(texts)
            filepath = field(e, "filepath", path, where, str) if "filepath" in e else ""
            image_id = i
            for key in ("imgid", "cocoid"):  # cocoid wins, as before
                if key in e:
                    image_id = field(e, key, path, where, int)
            samples.append({"img_path": self._image_path(filepath, name), "image_id": image_id,
                            "texts": texts, "index": img_index})
        return samples


@DATASETS.register_module()
class VQADataset(_AnnotationDataset):
    """VQA v2: questions file plus (for train/val) the annotations file with ten answers each.

    Images are found by ``image_template``, formatted with the questions file's ``data_subtype`` and the
    image id; the default is COCO's ``{data_subtype}/COCO_{data_subtype}_{image_id:012d}.jpg``.
    """

    def __init__(self, *args, answers_file: str | None = None,
                 image_template: str = "{data_subtype}/COCO_{data_subtype}_{image_id:012d}.jpg", **kwargs) -> None:
        self.answers_file = answers_file
        self.image_template = image_template
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> list[dict]:
        path = self.ann_file
        data = load_json(path)
        subtype = field(data, "data_subtype", path, "", str)
        answers: dict[int, dict] = {}
        seen: dict = {}
        if self.answers_file:
            ans_path = self._resolve(self.answers_file)
            ans_data = load_json(ans_path)
            for i, ann in enumerate(field(ans_data, "annotations", ans_path, "", list)):
                where = f"annotations[{i}]"
                qid = field(ann, "question_id", ans_path, where, int)
                _unique_id(seen, qid, ans_path, f"{where}.question_id", "question_id")
                raw = field(ann, "answers", ans_path, where, list)
                texts = [field(a, "answer", ans_path, f"{where}.answers[{j}]", str) for j, a in enumerate(raw)]
                if not texts:
                    raise InputError(ans_path, f"{where}.answers", "no answers")
                answers[qid] = {"answers": texts, "answer_type": ann.get("answer_type", ""),
                                "question_type": ann.get("question_type", ""),
                                "multiple_choice_answer": ann.get("multiple_choice_answer", "")}
        samples = []
        seen = {}
        for i, q in enumerate(field(data, "questions", path, "", list)):
            where = f"questions[{i}]"
            qid = field(q, "question_id", path, where, int)
            _unique_id(seen, qid, path, f"{where}.question_id", "question_id")  # answers and results are keyed by it
            image_id = field(q, "image_id", path, where, int)
            text = field(q, "question", path, where, str).strip()
            if not text:
                raise InputError(path, f"{where}.question", "empty question")
            sample = {"img_path": self._image_path(self.image_template.format(data_subtype=subtype, image_id=image_id)),
                      "image_id": image_id, "question_id": qid, "text": text}
            if self.answers_file:
                if qid not in answers:
                    raise InputError(self._resolve(self.answers_file), "annotations",
                                     f"no answers for question_id {qid}")
                sample.update(answers[qid])
            samples.append(sample)
        return samples


@DATASETS.register_module()
class NLVR2Dataset(_AnnotationDataset):
    """NLVR2 jsonl: a statement about two images, True or False.

    Image files follow NLVR2's naming: identifier ``dev-850-0-0`` → ``dev-850-0-img0.png`` and
    ``-img1.png``; a record's ``directory`` field (train) adds a sub-directory.
    """

    def load_data_list(self) -> list[dict]:
        path = self.ann_file
        samples = []
        for i, row in enumerate(load_jsonl(path), 1):
            where = f"line {i}"
            ident = field(row, "identifier", path, where, str)
            parts = ident.split("-")
            if len(parts) < 4:
                raise InputError(path, f"{where}.identifier", f"expected split-set-pair-sentence, got {ident!r}")
            text = field(row, "sentence", path, where, str).strip()
            if not text:
                raise InputError(path, f"{where}.sentence", "empty statement")
            label = field(row, "label", path, where, str)
            if label not in ("True", "False"):
                raise InputError(path, f"{where}.label", f"expected 'True' or 'False', got {label!r}")
            base = "-".join(parts[:-1])
            sub = str(row["directory"]) if "directory" in row else ""
            samples.append({"img_paths": [self._image_path(sub, f"{base}-img{k}.png") for k in (0, 1)],
                            "identifier": ident, "text": text, "label": int(label == "True")})
        return samples


@DATASETS.register_module()
class ReferringDataset(_AnnotationDataset):
    """RefCOCO/RefCOCO+/RefCOCOg: one sample per referring expression, with its referent's box.

    ``ann_file`` is the refs file, either the original ``refs(unc).p`` (read as plain data only, never
    unpickling a class) or the same records as JSON; boxes and file names come from ``instances_file``.
    """

    def __init__(self, *args, instances_file: str, split: str = "val", **kwargs) -> None:
        self.instances_file = instances_file
        self.split = split
        super().__init__(*args, **kwargs)

    def _size_source(self) -> str | None:
        return self._resolve(self.instances_file)

    def load_data_list(self) -> list[dict]:
        path = self.ann_file
        refs = load_plain_pickle(path) if path.endswith(".p") else load_json(path)
        if not isinstance(refs, list):
            raise InputError(path, None, "expected a list of refs")
        inst_path = self._resolve(self.instances_file)
        _, images, objects = load_coco_instances(inst_path)
        boxes = {o["id"]: o["bbox"] for objs in objects.values() for o in objs}
        splits = {field(r, "split", path, f"refs[{i}]", str) for i, r in enumerate(refs)}
        _check_split(path, self.split, splits)
        samples = []
        for i, ref in enumerate(refs):
            if ref["split"] != self.split:
                continue
            where = f"refs[{i}]"
            image_id = field(ref, "image_id", path, where, int)
            ann_id = field(ref, "ann_id", path, where, int)
            if image_id not in images:
                raise InputError(path, f"{where}.image_id", f"image {image_id} is not in {inst_path}")
            if ann_id not in boxes:
                raise InputError(path, f"{where}.ann_id", f"annotation {ann_id} is not in {inst_path}")
            img = images[image_id]
            for j, sent in enumerate(field(ref, "sentences", path, where, list)):
                text = field(sent, "sent", path, f"{where}.sentences[{j}]", str).strip()
                if not text:
                    raise InputError(path, f"{where}.sentences[{j}].sent", "empty expression")
                samples.append({"img_path": self._image_path(img["file_name"]), "image_id": image_id,
                                "ref_id": ref.get("ref_id", i), "text": text, "bbox": boxes[ann_id],
                                "height": img["height"], "width": img["width"]})
        return samples


def image_class_table(path: str) -> list[dict]:
    """The classes of an ImageNet-style folder-per-class pool (its ``classes.json``): per class its folder
    (``dir``), ``category`` and ``colour``."""
    data = load_json(path)
    if not isinstance(data, list) or not data:
        raise InputError(path, None, "must be a non-empty list of classes")
    for i, entry in enumerate(data):
        for key in ("dir", "category", "colour"):
            value = field(entry, key, path, f"[{i}]", str)
            if not value or (key == "dir" and (os.sep in value or value.startswith("."))):
                raise InputError(path, f"[{i}].{key}", f"must be a plain non-empty name, got {value!r}")
    dirs = [entry["dir"] for entry in data]
    if len(set(dirs)) != len(dirs):
        raise InputError(path, "dir", "names a folder twice")
    return data


def image_class_labels(table: Sequence[Mapping], single_label: bool = False) -> list[str]:
    """The class list of a pool: its categories (first-seen order), then its sorted colours and sorted "colour
    category" pairs, the order :func:`object_label_classes` gives an instances file; ``single_label``: the pairs
    only (one class per image, as ImageNet)."""
    if single_label:
        return [f"{entry['colour']} {entry['category']}" for entry in table]
    categories = list(dict.fromkeys(entry["category"] for entry in table))
    colours = sorted({entry["colour"] for entry in table})
    pairs = sorted({f"{entry['colour']} {entry['category']}" for entry in table})
    return categories + colours + pairs


@DATASETS.register_module()
class ImageClassDataset(_AnnotationDataset):
    """An image-classification pool in ImageNet's folder-per-class layout (``{split}/{class dir}/*.png``) whose
    ``classes.json`` (``ann_file``) says each class's category and colour: per image multi-hot ``labels`` over
    :func:`image_class_labels` (the category, the colour and the pair). The stand-in for the ImageNet labels a
    published ViT initialisation learns from: no boxes, and no image of the caption splits."""

    def __init__(self, *args, split: str = "train", single_label: bool = False, **kwargs) -> None:
        self.split, self.single_label = split, single_label
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> list[dict]:
        table = image_class_table(self.ann_file)
        self.classes = image_class_labels(table, self.single_label)
        index = {name: i for i, name in enumerate(self.classes)}
        split_dir = os.path.join(os.path.dirname(self.ann_file), self.split)
        if not os.path.isdir(split_dir):
            raise InputError(split_dir, "split", f"no folder for split {self.split!r} beside {self.ann_file}")
        samples = []
        for entry in table:
            labels = np.zeros(len(self.classes), dtype=np.float32)
            for name in (entry["category"], entry["colour"], f"{entry['colour']} {entry['category']}"):
                if name in index:
                    labels[index[name]] = 1.0
            folder = os.path.join(split_dir, entry["dir"])
            names = sorted(n for n in os.listdir(folder) if n.lower().endswith((".png", ".jpg", ".jpeg"))) \
                if os.path.isdir(folder) else []
            if not names:
                raise InputError(folder, entry["dir"], "class folder holds no image")
            samples += [{"img_path": os.path.join(folder, n), "image_id": len(samples) + k, "labels": labels}
                        for k, n in enumerate(names)]
        return samples
