"""Flickr30k with Karpathy's split: zero-shot retrieval and captioning (test).

Read as data, never run (harness/data/layouts.py). Layout under ``root``: ``dataset_flickr30k.json`` from
Karpathy's caption_datasets.zip and the images in ``flickr30k-images/``. Fine-tuning reads COCO-format captions
(CaptionDataset), which Flickr30k does not publish: fine-tune on COCO (``--data-config coco``) and test here.
"""

root = "data/flickr30k"
tokenizer = None

_split = dict(ann_file="dataset_flickr30k.json", images="flickr30k-images")

tasks = dict(
    retrieval=dict(test=dict(_split, split="test")),
    caption=dict(val=dict(_split, split="val"), test=dict(_split, split="test")),
)
