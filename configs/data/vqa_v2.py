"""VQA v2 on COCO 2014 images: train on train2014, test on val2014 (test-dev answers are withheld).

Read as data, never run (harness/data/layouts.py). Layout under ``root`` (the COCO directory): the question and
annotation files of visualqa.org in ``vqa/``, images as ``train2014/COCO_train2014_%012d.jpg`` (the questions
file's ``data_subtype`` names the folder).
"""

root = "data/coco"
tokenizer = None

_train = dict(ann_file="vqa/v2_OpenEnded_mscoco_train2014_questions.json",
              answers_file="vqa/v2_mscoco_train2014_annotations.json", images="")
_val = dict(ann_file="vqa/v2_OpenEnded_mscoco_val2014_questions.json",
            answers_file="vqa/v2_mscoco_val2014_annotations.json", images="")

tasks = dict(vqa=dict(train=_train, val=_val, test=_val))
