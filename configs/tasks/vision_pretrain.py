"""Vision pre-training: the class of each image of the benchmark's vision pool (single-object images in ImageNet's
folder-per-class layout, drawn apart from the caption images; no boxes), from the [CLS] and from the average of
the patch tokens (multi-label: category, colour, pair), the tiny scale's stand-in for ImageNet weights (see
harness/tasks/vision_pretrain.py). The pre-training task starts every model's ViT from the ``vision_encoder.pth``
this writes, so boxes on PTA's share of the caption training images are the only box signal a model sees.

The runner fills in the data root, the model's vision config, image size and the class list.
"""

_base_ = ["../_base_/default_runtime.py", "../_base_/schedules/adamw_warmup_cosine.py"]

harness = dict(task_spec=dict(headline=None, chance=None))  # the ViT initialisation: no table, gate or chance row

batch_size = 64
max_iters = 1200  # 12 epochs of the tiny pool's 6,400 images
single_label = True  # one class (colour + shape) per image and softmax cross-entropy, as ImageNet

pipeline = [dict(type="LoadImage"), dict(type="Resize", size=None), dict(type="ToTensor")]

train_dataloader = dict(
    batch_size=batch_size,
    num_workers=0,
    sampler=dict(type="DefaultSampler", shuffle=True),
    collate_fn=dict(type="copa_bench.label_collate"),
    dataset=dict(type="ImageClassDataset", data_root=None, ann_file="vision_pool/classes.json", split="train",
                 single_label=single_label, pipeline=pipeline),
)
val_dataloader = dict(
    batch_size=250,
    num_workers=0,
    sampler=dict(type="DefaultSampler", shuffle=False),
    collate_fn=dict(type="copa_bench.label_collate"),
    dataset=dict(type="ImageClassDataset", data_root=None, ann_file="vision_pool/classes.json", split="val",
                 single_label=single_label, pipeline=pipeline),
)
val_evaluator = dict(type="MultiLabelMetric")

train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
val_cfg = dict()

optim_wrapper = dict(optimizer=dict(_delete_=True, type="AdamW", lr=1e-3, weight_decay=0.05))  # torch's betas
param_scheduler = [dict(_base_.param_scheduler[0], start_factor=0.05, end=30),  # warm-up from 5% of the rate
                   dict(_base_.param_scheduler[1], begin=30, end=max_iters, eta_min=1e-5)]

default_hooks = dict(checkpoint=dict(interval=max_iters))
custom_hooks = [dict(type="ExportVisionEncoderHook")]
