"""The image-caption training pairs of the benchmark (``annotations/captions_train.json``), one sample per caption:
what pre-training, retrieval and captioning train on (mmengine ``_base_``). A task merges its batch size and
pipeline (and any further annotation files) into this, e.g.
``train_dataloader = dict(batch_size=batch_size, dataset=dict(pipeline=pipeline))``."""

train_dataloader = dict(
    num_workers=0,
    sampler=dict(type="DefaultSampler", shuffle=True),
    collate_fn=dict(type="copa_bench.vlp_collate", tokenizer=None, max_length=40),
    dataset=dict(type="CaptionDataset", data_root=None, ann_file="annotations/captions_train.json",
                 data_prefix=dict(img_path="images"), pipeline=None),
)
