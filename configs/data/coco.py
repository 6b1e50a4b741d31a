"""COCO 2014 captions and instances with Karpathy's split: pre-training, retrieval, captioning, patch detection.

Read as data, never run (harness/data/layouts.py). Layout under ``root`` (``--data`` replaces it): COCO's
``annotations/`` (captions_*2014.json, instances_*2014.json), ``train2014/`` and ``val2014/`` images, and
``dataset_coco.json`` from Karpathy's caption_datasets.zip (its ``filepath`` names the image folder).
"""

root = "data/coco"
tokenizer = None  # --tokenizer DIR: a directory with a vocab.txt (e.g. a local bert-base-uncased)

_train2014 = dict(ann_file="annotations/captions_train2014.json", images="train2014")
_val2014 = dict(ann_file="annotations/captions_val2014.json", images="val2014")
_boxes_train = dict(_train2014, instances_file="annotations/instances_train2014.json")
_boxes_val = dict(_val2014, instances_file="annotations/instances_val2014.json")

tasks = dict(
    # PTA sees the boxes of 5% of the training images, as in COPA's abstract (pta_fraction; drawn with seed 0)
    pretrain=dict(train=dict(_boxes_train, pta_fraction=0.05), test=_boxes_val),  # no val: 200k captions
    retrieval=dict(train=_train2014, test=dict(ann_file="dataset_coco.json", split="test", images="")),
    caption=dict(train=_train2014, val=dict(ann_file="dataset_coco.json", split="val", images=""),
                 test=dict(ann_file="dataset_coco.json", split="test", images="")),
    patch_detection=dict(test=_boxes_val),
)
