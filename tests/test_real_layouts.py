"""Real data from the CLI: the registered data configs (configs/data/) read a few-image fixture written here in each
published layout (COCO 2014, Karpathy's splits, VQA v2, NLVR2, RefCOCO/+/g, Flickr30k), with no generator and no
MANIFEST.json; one task runs end to end on it; a bad data config is one line, exit 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from harness.cli import main
from harness.data.layouts import apply_data_config, data_config_names, load_data_config
from harness.errors import InputError

WORDS = "a an the dog person cat sitting next to on is what colour of how many two brown white left image right " \
        "there are standing man woman".split()
CAPTIONS = ["A dog sitting next to a person.", "A brown dog on the left.", "Two cats and a man.",
            "A woman standing next to a white cat."]


def _image(path: Path, size: tuple[int, int], seed: int) -> None:
    """A small picture with a coloured block where the fixture's box says the object is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, ((40 * seed) % 256, 90, 160))
    img.paste((250, 200, 20), (4, 4, 4 + size[0] // 2, 4 + size[1] // 2))
    img.save(path, quality=90) if path.suffix == ".jpg" else img.save(path)


def _json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _py2_pickle(obj) -> bytes:
    """``obj`` pickled as Python 2 wrote refer's refs(unc).p (protocol 0, byte strings as STRING opcodes), which
    Python 3's pickle module cannot write."""
    out: list[bytes] = []

    def put(o) -> None:
        if isinstance(o, dict):
            out.append(b"(d")
            for k, v in o.items():
                put(k)
                put(v)
                out.append(b"s")
        elif isinstance(o, list):
            out.append(b"(l")
            for v in o:
                put(v)
                out.append(b"a")
        elif isinstance(o, str):
            out.append(b"S" + repr(o.encode("ascii"))[1:].encode() + b"\n")
        elif isinstance(o, int):
            out.append(f"I{o}\n".encode())
        else:
            out.append(f"F{o!r}\n".encode())

    put(obj)
    return b"".join(out) + b"."


def coco_images(sub: str, ids: list[int]) -> list[dict]:
    return [{"license": 1, "file_name": f"COCO_{sub}_{i:012d}.jpg", "coco_url": "", "height": 40 + 8 * (i % 2),
             "width": 48, "date_captured": "2013-11-14 16:28:13", "flickr_url": "", "id": i} for i in ids]


CATEGORIES = [{"supercategory": "person", "id": 1, "name": "person"},
              {"supercategory": "animal", "id": 17, "name": "cat"},
              {"supercategory": "animal", "id": 18, "name": "dog"}]
SPLIT_IDS = {"train2014": [9, 25, 30, 34], "val2014": [42, 73, 74, 133]}


def _instances(images: list[dict]) -> dict:
    anns = [{"segmentation": [[4.0, 4.0, 20.0, 4.0, 20.0, 20.0]], "area": 200.5, "iscrowd": 0,
             "image_id": img["id"], "bbox": [4.0, 4.0, 24.0, 20.0], "category_id": [18, 17, 1][k],
             "id": 1000 * img["id"] + k} for img in images for k in range(3)]
    return {"info": {"year": 2014}, "licenses": [], "images": images, "annotations": anns, "categories": CATEGORIES}


def published_layouts(base: Path) -> dict[str, Path]:
    """COCO (with Karpathy, VQA v2 and refer's RefCOCO/+/g under it), NLVR2, Flickr30k and a BERT-style vocabulary,
    a few images each, in the files and folders the datasets are published in."""
    coco = base / "coco"
    for sub, ids in SPLIT_IDS.items():
        images = coco_images(sub, ids)
        for img in images:
            _image(coco / sub / img["file_name"], (img["width"], img["height"]), img["id"])
        caps = [{"image_id": img["id"], "id": 10 * img["id"] + k, "caption": CAPTIONS[(img["id"] + k) % 4]}
                for img in images for k in range(2)]
        _json(coco / "annotations" / f"captions_{sub}.json",
              {"info": {}, "licenses": [], "images": images, "annotations": caps})
        _json(coco / "annotations" / f"instances_{sub}.json", _instances(images))
        asked = [("What colour is the dog?", "brown"), ("What colour is the cat?", "brown"),
                 ("What colour is the man?", "brown"), ("How many cats are there?", "2")]  # 12 'brown': min_count 9
        questions = [{"image_id": img["id"], "question": q, "question_id": 1000 * img["id"] + k}
                     for img in images for k, (q, _) in enumerate(asked)]
        answers = [{"question_type": "how many" if a == "2" else "what color is the", "multiple_choice_answer": a,
                    "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1} for j in range(10)],
                    "image_id": img["id"], "answer_type": "number" if a == "2" else "other",
                    "question_id": 1000 * img["id"] + k}
                   for img in images for k, (_, a) in enumerate(asked)]
        _json(coco / "vqa" / f"v2_OpenEnded_mscoco_{sub}_questions.json",
              {"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "license": {}, "data_subtype": sub,
               "questions": questions})
        _json(coco / "vqa" / f"v2_mscoco_{sub}_annotations.json",
              {"info": {}, "license": {}, "data_subtype": sub, "annotations": answers})
    karpathy = []
    for sub, ids in SPLIT_IDS.items():
        for k, i in enumerate(ids):
            split = "train" if sub == "train2014" else ["test", "test", "val", "restval"][k]
            sents = [{"tokens": c.lower().rstrip(".").split(), "raw": c, "imgid": len(karpathy), "sentid": j}
                     for j, c in enumerate(CAPTIONS[k:k + 2])]
            karpathy.append({"filepath": sub, "sentids": [s["sentid"] for s in sents],
                             "filename": f"COCO_{sub}_{i:012d}.jpg", "imgid": len(karpathy), "split": split,
                             "sentences": sents, "cocoid": i})
    _json(coco / "dataset_coco.json", {"images": karpathy, "dataset": "coco"})
    train = coco_images("train2014", SPLIT_IDS["train2014"])
    for folder, split_by, splits in (("refcoco", "unc", ["train", "val", "testA", "testB"]),
                                     ("refcoco+", "unc", ["train", "val", "testA", "testB"]),
                                     ("refcocog", "umd", ["train", "val", "test"])):
        refs = [{"sent_ids": [3 * r, 3 * r + 1], "file_name": f"{img['file_name'][:-4]}_{1000 * img['id']}.jpg",
                 "ann_id": 1000 * img["id"], "ref_id": r, "image_id": img["id"], "split": splits[r % len(splits)],
                 "sentences": [{"tokens": ["brown", "dog"], "raw": "brown dog", "sent_id": 3 * r, "sent": "brown dog"},
                               {"tokens": ["dog", "on", "the", "left"], "raw": "Dog on the left",
                                "sent_id": 3 * r + 1, "sent": "dog on the left"}],
                 "category_id": 18} for r, img in enumerate(train * 2)]
        (coco / folder).mkdir(parents=True, exist_ok=True)
        (coco / folder / f"refs({split_by}).p").write_bytes(_py2_pickle(refs))
        _json(coco / folder / "instances.json", _instances(train))
    nlvr2 = base / "nlvr2"
    for split, ann in (("train", "train.json"), ("dev", "dev.json"), ("test1", "test1.json")):
        rows = []
        for n in range(4):
            ident = f"{split}-{100 + n}-{n % 2}-{n % 3}"
            row = {"validation": {}, "sentence": CAPTIONS[n], "left_url": "", "writer": "1", "label": str(n % 2 == 0),
                   "right_url": "", "synset": "n02084071", "query": "dog", "identifier": ident,
                   "extra_validations": {}}
            folder = nlvr2 / "images" / split
            if split == "train":
                row["directory"] = n  # train images sit in numbered sub-folders
                folder = folder / str(n)
            for k in (0, 1):
                _image(folder / f"{ident.rsplit('-', 1)[0]}-img{k}.png", (56, 40), n + k)
            rows.append(row)
        (nlvr2 / ann).write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    flickr = base / "flickr30k"
    entries = []
    for k, name in enumerate(["1000092795.jpg", "10002456.jpg", "1000268201.jpg", "1000344755.jpg"]):
        _image(flickr / "flickr30k-images" / name, (50, 36), k)
        sents = [{"tokens": c.lower().split(), "raw": c, "imgid": k, "sentid": 2 * k + j}
                 for j, c in enumerate(CAPTIONS[k:k + 2])]
        entries.append({"sentids": [2 * k, 2 * k + 1], "imgid": k, "sentences": sents,
                        "split": ["train", "val", "test", "test"][k], "filename": name})
    _json(flickr / "dataset_flickr30k.json", {"images": entries, "dataset": "flickr30k"})
    bert = base / "bert"
    bert.mkdir()
    chars = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789.,?!'-"))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + [f"##{c}" for c in chars]
    vocab += [w for w in WORDS if w not in vocab]  # a token listed twice would get an id past the vocabulary's size
    (bert / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return {"coco": coco, "nlvr2": nlvr2, "flickr30k": flickr, "tokenizer": bert}


ROOTS = {"nlvr2": "nlvr2", "flickr30k": "flickr30k"}  # every other registered config lives in the COCO directory


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> dict[str, Path]:
    return published_layouts(tmp_path_factory.mktemp("published"))


def test_every_registered_data_config_reads_its_published_layout(layouts) -> None:
    """Each registered config, each task and split it lists: the task's own dataset loads the fixture's files and
    its first sample decodes (image resized for the tiny model)."""
    from harness.registry import DATASETS
    from harness.runner import _fill_loader, _register_everything, load_task_config

    _register_everything()
    assert set(data_config_names()) >= {"coco", "flickr30k", "vqa_v2", "nlvr2", "refcoco", "refcoco_plus",
                                        "refcocog"}
    for name in data_config_names():
        data = load_data_config(name, layouts[ROOTS.get(name, "coco")], layouts["tokenizer"])
        for task, splits in data.tasks.items():
            cfg = load_task_config(task)
            apply_data_config(cfg, task, data, testing="train" not in splits)
            assert cfg.harness.data_config["sha256"]
            for split in splits:
                loader = cfg[f"{split}_dataloader"]
                _fill_loader(loader, None, str(layouts["tokenizer"]), 64, 8)
                dataset = DATASETS.build(loader.dataset)
                assert len(dataset) > 0, (name, task, split)
                sample = dataset[0]
                image = sample["imgs"] if "imgs" in sample else sample["img"]
                assert tuple(image.shape[-2:]) == (64, 64), (name, task, split)
                if task == "pretrain" and split == "test":
                    assert sample["relevant_boxes"], "instances matched to the caption's words"


@pytest.mark.slow
def test_pretrain_then_zero_shot_retrieval_from_the_coco_layout(layouts, tmp_path, monkeypatch, capsys) -> None:
    """The README's commands: one pre-training iteration on COCO's captions, then zero-shot retrieval on
    Karpathy's test split: no MANIFEST.json, no generated benchmark (nothing appears under data/)."""
    monkeypatch.chdir(tmp_path)
    common = ["--data-config", "coco", "--data", str(layouts["coco"]), "--tokenizer", str(layouts["tokenizer"]),
              "--model", "albef"]
    assert main(["train", "--task", "pretrain", *common, "--vision-init", "none", "--max-iters", "1",
                 "--work-dir", "pre"]) == 0
    checkpoint = (tmp_path / "pre" / "last_checkpoint").read_text().strip()
    record = json.loads((tmp_path / "pre" / "job.json").read_text())
    assert record["job_hash"]
    assert main(["test", "--task", "retrieval", *common, "--checkpoint", checkpoint, "--work-dir", "zs"]) == 0
    out = capsys.readouterr().out
    assert "r_mean" in out or "txt_r1" in out, out
    assert not (tmp_path / "data").exists()
    assert not (layouts["coco"] / "MANIFEST.json").exists()


def _digest(coco: Path, tokenizer: Path) -> str:
    from harness.runner import build_config, job_digest

    cfg = build_config("albef", "pretrain", data=coco, data_config="coco", tokenizer=tokenizer, vision_init="none",
                       work_dir="unused", max_iters=1)
    return job_digest(cfg)


def test_job_hash_follows_the_annotation_bytes_not_the_images(tmp_path) -> None:
    paths = published_layouts(tmp_path)
    before = _digest(paths["coco"], paths["tokenizer"])
    _image(paths["coco"] / "train2014" / "COCO_train2014_000000000009.jpg", (48, 48), 3)
    assert _digest(paths["coco"], paths["tokenizer"]) == before  # images are named by the annotations
    captions = paths["coco"] / "annotations" / "captions_train2014.json"
    captions.write_text(captions.read_text().replace("Two cats", "Three cats"))
    assert _digest(paths["coco"], paths["tokenizer"]) != before


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("copa-bench: error: ") and "\n" not in err and "Traceback" not in err, captured.err
    return err


def test_a_missing_file_is_one_line_naming_the_field_and_the_file(layouts, tmp_path, monkeypatch, capsys) -> None:
    import shutil

    monkeypatch.chdir(tmp_path)
    coco = tmp_path / "coco"
    shutil.copytree(layouts["coco"], coco)
    (coco / "dataset_coco.json").unlink()
    err = _one_line_error(capsys, ["test", "--model", "albef", "--task", "retrieval", "--data-config", "coco",
                                   "--data", str(coco), "--tokenizer", str(layouts["tokenizer"]),
                                   "--checkpoint", "nowhere.pth", "--work-dir", "job"])
    assert "configs/data/coco.py: tasks.retrieval.test.ann_file: " in err and str(coco / "dataset_coco.json") in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco"]  # no work dir, no generated benchmark


@pytest.mark.parametrize(("text", "field", "message"), [
    ("import os\n", "line 2", "only 'name = value' assignments"),
    ("root = __import__('os').system('touch pwned')\n", "line 2", "only literals"),
    ("tasks = dict(retrieval=dict(test=dict(ann_file='x.json', images='', colour='red')))\n",
     "tasks.retrieval.test.colour", "unknown field"),
    ("tasks = dict(sorting=dict(test=dict(ann_file='x.json')))\n", "tasks.sorting", "unknown task"),
    ("tasks = dict(retrieval=dict(dev=dict(ann_file='x.json')))\n", "tasks.retrieval.dev", "unknown split"),
    ("tasks = dict(retrieval=dict(test=dict(ann_file='x.json', images='')))\ntoknizer = 'bert'\n", "toknizer",
     "unknown key"),
])
def test_a_data_config_is_read_never_run(tmp_path, monkeypatch, capsys, text, field, message) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "mine.py"
    path.write_text('"""My data."""\n' + text)
    err = _one_line_error(capsys, ["test", "--model", "albef", "--task", "retrieval", "--data-config", str(path),
                                   "--data", str(tmp_path), "--checkpoint", "c.pth"])
    assert f"{path}: {field}: " in err and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.py"]


def test_real_text_needs_a_tokenizer_and_auto_vision_init_is_refused(layouts, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--model", "albef", "--task", "pretrain", "--data-config", "coco", "--data",
            str(layouts["coco"]), "--max-iters", "1"]
    err = _one_line_error(capsys, argv + ["--vision-init", "none"])
    assert "coco.py: tokenizer: no tokenizer: pass --tokenizer DIR" in err
    err = _one_line_error(capsys, argv + ["--tokenizer", str(layouts["tokenizer"])])
    assert "--vision-init: 'auto'" in err
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="neither a registered data config"):
        load_data_config("../coco")
