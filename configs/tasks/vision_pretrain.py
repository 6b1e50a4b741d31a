"""Vision pre-training: what is in each training image, from the [CLS] (multi-label) and from the patch tokens under
each object's box (category and colour), the tiny scale's stand-in for ImageNet weights (see
harness/tasks/vision_pretrain.py). The pre-training task starts every model's ViT from the ``vision_encoder.pth``
this writes.

The runner fills in the data root, the model's vision config, image and patch size, and the class lists.
"""

_base_ = ["../_base_/default_runtime.py"]

batch_size = 64
max_iters = 1200  # about 26 epochs of the tiny benchmark's 3000 training images; 600 name 71% of the shapes, 1200 79%

pipeline = [dict(type="LoadImage"), dict(type="Resize", size=None), dict(type="ObjectPatchWeights", patch_size=None),
            dict(type="ToTensor")]

train_dataloader = dict(
    batch_size=batch_size,
    num_workers=0,
    sampler=dict(type="DefaultSampler", shuffle=True),
    collate_fn=dict(type="copa_bench.label_collate"),
    dataset=dict(type="ObjectLabelDataset", data_root=None, ann_file="annotations/instances_train.json",
                 attribute="colour", data_prefix=dict(img_path="images"), pipeline=pipeline),
)
val_dataloader = dict(
    batch_size=250,
    num_workers=0,
    sampler=dict(type="DefaultSampler", shuffle=False),
    collate_fn=dict(type="copa_bench.label_collate"),
    dataset=dict(type="ObjectLabelDataset", data_root=None, ann_file="annotations/instances_val.json",
                 attribute="colour", data_prefix=dict(img_path="images"), pipeline=pipeline),
)
val_evaluator = dict(type="MultiLabelMetric")

train_cfg = dict(by_epoch=False, max_iters=max_iters, val_interval=max_iters)
val_cfg = dict()

optim_wrapper = dict(optimizer=dict(type="AdamW", lr=1e-3, weight_decay=0.05), clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(type="LinearLR", start_factor=0.05, by_epoch=False, begin=0, end=30),
    dict(type="CosineAnnealingLR", by_epoch=False, begin=30, end=max_iters, eta_min=1e-5),
]

default_hooks = dict(checkpoint=dict(interval=max_iters))
custom_hooks = [dict(type="ExportVisionEncoderHook")]
