"""NLVR2 fine-tuning: True/False for a statement about two images (see harness/tasks/nlvr2.py).

``copa-bench train --model M --task nlvr2`` starts from M's pre-training checkpoint; ``copa-bench test``
needs the fine-tuned one. Trained on train, tested on the benchmark's held-out ``test`` split (real NLVR2's
``test1.json``: pass it with ``--data`` laid out the same way), validated on ``val`` (real NLVR2's dev).
The EfficiencyHook measures one (left image, statement) pair per sample, the unit every task reports; the
NLVR2 model itself encodes two pairs per sample. The tiny schedule is 1000 iterations of 32 statements (3.6
epochs of the 9000); both labels are equally frequent in every split, so chance is 50%. On the 1,500 training pairs
of the benchmark's generator version 2, every model stayed at chance however long it trained (ALBEF: train loss
0.50 and val 46.4 after 1000 iterations); on 9,000 it reached val 60.4 (docs/experiments/history.md).
The pre-trained ViT learns at a tenth of the rate (the head at ten times): at the full rate
TRIPS's loss stayed at 0.69 for 500 iterations and ended at 0.65 (test 52.0), at a tenth it ended at 0.60 (test
59.4; val 58.0, as much as 2000 iterations at the full rate gave); the downstream suite's five models went from
50.6-61.2 to 53.4-61.6.
"""

_base_ = ["../_base_/default_runtime.py", "../_base_/schedules/head_finetune.py"]

batch_size = 32
max_iters = 1000

# what the harness reads (harness/config_namespace.py): the task's declaration for tables, the gate, chance and
# suites (harness/taskspec.py), and its model
harness = dict(
    task_spec=dict(headline="acc", chance="majority_label", requires=["fusion"], label="NLVR2", order=40),
    task_model=dict(type="NLVR2Model"),
)

pipeline = [
    dict(type="LoadImage"),  # both images of the pair
    dict(type="Resize", size=None),  # the model's image size
    dict(type="ToTensor"),
]


def _split(split: str) -> dict:
    return dict(type="NLVR2Dataset", data_root=None, ann_file=f"nlvr2/{split}.json",
                data_prefix=dict(img_path=f"nlvr2/images/{split}"), pipeline=pipeline)


collate = dict(type="copa_bench.nlvr2_collate", tokenizer=None, max_length=40)
train_dataloader = dict(batch_size=batch_size, num_workers=0, sampler=dict(type="DefaultSampler", shuffle=True),
                        collate_fn=collate, dataset=_split("train"))
val_dataloader = dict(batch_size=64, num_workers=0, sampler=dict(type="DefaultSampler", shuffle=False),
                      collate_fn=collate, dataset=_split("val"))
test_dataloader = dict(val_dataloader, dataset=_split("test"))
val_evaluator = dict(type="AccuracyMetric")
test_evaluator = val_evaluator

train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
val_cfg = dict()
test_cfg = dict()

# ViLT's fine-tuning: lr 1e-4, the new head at 10x, the pre-trained ViT at a tenth (_base_/schedules/head_finetune.py)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={"nlvr2_head": dict(lr_mult=10.0)}))
param_scheduler = [dict(_base_.param_scheduler[0], end=15), dict(_base_.param_scheduler[1], begin=15, end=max_iters)]

default_hooks = dict(checkpoint=dict(interval=max_iters))

custom_hooks = [dict(type="EfficiencyHook", repeats=3)]
