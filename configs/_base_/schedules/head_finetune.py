"""Fine-tuning a pre-trained model with a new classification head, as ViLT fine-tunes for VQA and NLVR2 (mmengine
``_base_``): lr 1e-4, weight decay 0.01, a warm-up from 5% of the rate, the head at ten times the rate and the
pre-trained ViT at a tenth (``harness.pretrained_vision_lr_mult``; pre-training uses the full rate). A task names
its head and sets its warm-up and ``max_iters``::

    optim_wrapper = dict(paramwise_cfg=dict(custom_keys={"vqa_head": dict(lr_mult=10.0)}))
    param_scheduler = [dict(_base_.param_scheduler[0], end=20),
                       dict(_base_.param_scheduler[1], begin=20, end=max_iters)]
"""

_base_ = ["./adamw_warmup_cosine.py"]

harness = dict(pretrained_vision_lr_mult=0.1)  # harness/config_namespace.py
optim_wrapper = dict(
    optimizer=dict(lr=1e-4, weight_decay=0.01),
    # bypass_duplicate: the MLM decoder shares the word embeddings, so skip the repeat
    paramwise_cfg=dict(bypass_duplicate=True),
)
param_scheduler = [dict(_base_.param_scheduler[0], start_factor=0.05), _base_.param_scheduler[1]]
