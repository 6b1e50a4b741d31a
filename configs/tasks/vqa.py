"""VQA v2 fine-tuning: answer classification over the training answers (see harness/tasks/vqa.py).

``copa-bench train --model M --task vqa`` starts from M's pre-training checkpoint; ``copa-bench test``
needs the fine-tuned one. Trained on the train split; tested on the test split, whose annotations the
offline benchmark writes (the real VQA v2 test-dev/test-std answers are withheld: with real data, point
``test_dataloader`` at val, as the field reports val numbers when it does not submit to the server). The
tiny schedule is 1000 iterations of 64 questions (7 epochs of the 9000): ALBEF's val accuracy was 41.5 after 200
(below the per-question-type prior, 42.4: the head had not yet learnt the answer types) and 49.6 after 1000; at
lr 3e-4 instead of 1e-4 it stayed at 41.3 (docs/experiments/history.md). The pre-trained ViT learns at a tenth
of the rate, as in pre-training (the head at ten times): random's test accuracy was 42.2 at the full rate (the
prior's 41.5) and 46.6 at a tenth.
"""

_base_ = ["../_base_/default_runtime.py", "../_base_/schedules/head_finetune.py"]

batch_size = 64
max_iters = 1000

# what the harness reads (harness/config_namespace.py): the task's declaration for tables, the gate, chance and
# suites (harness/taskspec.py), and its model
harness = dict(
    task_spec=dict(headline="vqa_acc", chance="question_type_prior", requires=["fusion"], label="VQA", order=30),
    task_model=dict(type="VQAModel", answers_file="vqa/v2_synth_train_annotations.json", data_root=None,
                    min_count=9, max_answers=3129),  # ViLT's threshold; VQA v2 then has 3129 answers
)

pipeline = [
    dict(type="LoadImage"),
    dict(type="Resize", size=None),  # the model's image size
    dict(type="ToTensor"),
]
image_template = "images/synth_{data_subtype}_{image_id:012d}.png"  # the benchmark's; COCO's for real VQA v2


def _split(split: str) -> dict:
    return dict(type="VQADataset", data_root=None, ann_file=f"vqa/v2_OpenEnded_synth_{split}_questions.json",
                answers_file=f"vqa/v2_synth_{split}_annotations.json", image_template=image_template,
                pipeline=pipeline)


collate = dict(type="copa_bench.vqa_collate", tokenizer=None, max_length=40)
train_dataloader = dict(batch_size=batch_size, num_workers=0, sampler=dict(type="DefaultSampler", shuffle=True),
                        collate_fn=collate, dataset=_split("train"))
val_dataloader = dict(batch_size=128, num_workers=0, sampler=dict(type="DefaultSampler", shuffle=False),
                      collate_fn=collate, dataset=_split("val"))
test_dataloader = dict(val_dataloader, dataset=_split("test"))
val_evaluator = dict(type="VQAMetric")
test_evaluator = val_evaluator

train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
val_cfg = dict()
test_cfg = dict()

# ViLT's fine-tuning: lr 1e-4, the new head at 10x, the pre-trained ViT at a tenth (_base_/schedules/head_finetune.py)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={"vqa_head": dict(lr_mult=10.0)}))
param_scheduler = [dict(_base_.param_scheduler[0], end=20), dict(_base_.param_scheduler[1], begin=20, end=max_iters)]

default_hooks = dict(checkpoint=dict(interval=max_iters))

custom_hooks = [dict(type="EfficiencyHook", repeats=3)]
