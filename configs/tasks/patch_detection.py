"""Patch detection on the test split: precision and recall of the patches the first reduction point keeps,
and the AUC of its scores, against the object-to-patch labels of the objects each caption mentions.

Test-only (``copa-bench test --task patch_detection --checkpoint C``) and only for models with a reducer.
"""

# what the harness reads (harness/config_namespace.py): the task's declaration for tables, the gate, chance and
# suites (harness/taskspec.py), and its model
harness = dict(
    task_spec=dict(headline="patch_auc", fractions=["patch_auc"], chance="uninformative_scores",
                   requires=["reducer"], test_only=True, label="patch detection", order=70),
    task_model=dict(type="PatchDetectionModel"),
)

pipeline = [
    dict(type="LoadImage"),
    dict(type="Resize", size=None),
    dict(type="PatchLabels", patch_size=None, min_overlap=0.1),
    dict(type="ToTensor"),
]
test_dataloader = dict(
    batch_size=64,
    num_workers=0,
    sampler=dict(type="DefaultSampler", shuffle=False),
    collate_fn=dict(type="copa_bench.vlp_collate", tokenizer=None, max_length=40),
    dataset=dict(type="CaptionDataset", data_root=None, ann_file="annotations/captions_test.json",
                 instances_file="annotations/instances_test.json", data_prefix=dict(img_path="images"),
                 pipeline=pipeline),
)
test_evaluator = dict(type="PatchDetectionMetric")
test_cfg = dict()
