"""Image-text retrieval on the Karpathy split: fine-tuning with ITC + ITM on the training captions, testing
over the whole test gallery with an ITC shortlist of k = 16 re-ranked by ITM (RetrievalTestLoop).

Zero-shot retrieval is ``copa-bench test --task retrieval --checkpoint <pre-training checkpoint>``; the
fine-tuned result is ``copa-bench train --task retrieval`` then ``test`` with its checkpoint. ViLT has no
text-free embedding to shortlist with, so the task does not apply to it (ranking every pair with ITM is
the alternative, not run here).
"""

_base_ = ["../_base_/default_runtime.py", "../_base_/schedules/adamw_warmup_cosine.py",
          "../_base_/datasets/caption_pairs_train.py"]

batch_size = 32
max_iters = 200
# what the harness reads (harness/config_namespace.py): the task's declaration for tables, the gate, chance and
# suites (harness/taskspec.py), and its model
# (zero-shot retrieval is this config run by a suite as a test of the pre-training checkpoint)
harness = dict(
    task_spec=dict(headline="r_mean", chance="random_ranking", requires=["itc"], label="retrieval", order=20,
                   variants=dict(retrieval_zeroshot=dict(test_only=True, label="zero-shot retrieval", order=10))),
    task_model=dict(type="RetrievalModel", k=16),
)

pipeline = [dict(type="LoadImage"), dict(type="Resize", size=None), dict(type="ToTensor")]

train_dataloader = dict(batch_size=batch_size, dataset=dict(pipeline=pipeline))  # the training captions
test_dataloader = dict(
    batch_size=64,
    num_workers=0,
    sampler=dict(type="DefaultSampler", shuffle=False),
    collate_fn=dict(type="copa_bench.retrieval_collate", tokenizer=None, max_length=40),
    dataset=dict(type="RetrievalDataset", data_root=None, ann_file="karpathy/dataset_coco.json", split="test",
                 data_prefix=dict(img_path=""), pipeline=pipeline),  # the split file gives "filepath"
)
test_evaluator = dict(type="RetrievalMetric")
test_cfg = dict(type="RetrievalTestLoop")

train_cfg = dict(max_iters=max_iters)
optim_wrapper = dict(optimizer=dict(lr=1e-4))
param_scheduler = [dict(_base_.param_scheduler[0], end=20),  # warm-up from a tenth of the rate
                   dict(_base_.param_scheduler[1], begin=20, end=max_iters)]  # cosine to 1e-6
default_hooks = dict(checkpoint=dict(interval=max_iters))
custom_hooks = [dict(type="EfficiencyHook", repeats=3),
                dict(type="DistillationWarmupHook", fraction=1 / 30)]  # ALBEF Retrieval.py: alpha ramps over epoch 0
