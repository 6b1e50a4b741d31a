"""Top-1 patch hit: whether the first reduction point's best patch lies on a mentioned object (test-only)."""

# the declaration copa-bench's tables, gate, chance and suites read (harness/taskspec.py)
harness = dict(  # what copa-bench reads: the task's declaration and its model
    task_spec=dict(headline="top1_hit", chance=None, requires=["reducer"], test_only=True, label="top-1 patch"),
    task_model=dict(type="PatchDetectionModel"),  # copa-bench's: the reducer's scores and the patch labels
)

pipeline = [dict(type="LoadImage"), dict(type="Resize", size=None), dict(type="PatchLabels", patch_size=None,
                                                                        min_overlap=0.1), dict(type="ToTensor")]
test_dataloader = dict(
    batch_size=64,
    num_workers=0,
    sampler=dict(type="DefaultSampler", shuffle=False),
    collate_fn=dict(type="copa_bench.vlp_collate", tokenizer=None, max_length=40),
    dataset=dict(type="CaptionDataset", data_root=None, ann_file="annotations/captions_test.json",
                 instances_file="annotations/instances_test.json", data_prefix=dict(img_path="images"),
                 pipeline=pipeline),
)
test_evaluator = dict(type="TopPatchHitMetric")
test_cfg = dict()
