"""RefCOCOg grounding (umd split): train on train, validate on val, test on test.

Read as data, never run (harness/data/layouts.py). Layout under ``root`` (the COCO directory): lichengunc/refer's
``refcocog/refs(umd).p`` (a pickle, read as plain data only) and ``refcocog/instances.json``, images in
``train2014/``.
"""

root = "data/coco"
tokenizer = None

_refs = dict(ann_file="refcocog/refs(umd).p", instances_file="refcocog/instances.json", images="train2014")

tasks = dict(grounding=dict(train=dict(_refs, split="train"), val=dict(_refs, split="val"),
                            test=dict(_refs, split="test")))
