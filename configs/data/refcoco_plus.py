"""RefCOCO+ grounding (unc split): train on train, validate on val, test on testA.

Read as data, never run (harness/data/layouts.py). Layout under ``root`` (the COCO directory): lichengunc/refer's
``refcoco+/refs(unc).p`` (a pickle, read as plain data only) and ``refcoco+/instances.json``, images in
``train2014/``.
"""

root = "data/coco"
tokenizer = None

_refs = dict(ann_file="refcoco+/refs(unc).p", instances_file="refcoco+/instances.json", images="train2014")

tasks = dict(grounding=dict(train=dict(_refs, split="train"), val=dict(_refs, split="val"),
                            test=dict(_refs, split="testA")))
