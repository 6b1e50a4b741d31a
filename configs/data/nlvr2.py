"""NLVR2: train on train.json, validate on dev.json, test on test1.json.

Read as data, never run (harness/data/layouts.py). Layout under ``root``: lil-lab/nlvr's ``nlvr2/data/*.json``
(JSON lines) and the images in ``images/train/<directory>/``, ``images/dev/`` and ``images/test1/``
(``train-10171-0-img0.png``).
"""

root = "data/nlvr2"
tokenizer = None

tasks = dict(nlvr2=dict(
    train=dict(ann_file="train.json", images="images/train"),
    val=dict(ann_file="dev.json", images="images/dev"),
    test=dict(ann_file="test1.json", images="images/test1"),
))
