"""What every training task's optimiser and schedule share (mmengine ``_base_``): AdamW with clipped gradients, a
linear warm-up from a fraction of the rate, then a cosine decay to ``eta_min``, both by iteration.

A task config writes only what differs. ``optim_wrapper`` is a dict, so a task's merges into this one key by key,
e.g. ``optim_wrapper = dict(optimizer=dict(lr=1e-4))`` (``_delete_=True`` replaces a dict instead). ``param_scheduler``
is a list, which a task replaces whole: it builds its two phases from these, ending the cosine at its own
``max_iters`` (the cosine's ``end`` is None here, so a task that forgets it fails to start)::

    param_scheduler = [dict(_base_.param_scheduler[0], end=20),
                       dict(_base_.param_scheduler[1], begin=20, end=max_iters)]
"""

optim_wrapper = dict(
    optimizer=dict(type="AdamW", lr=5e-4, weight_decay=0.02, betas=(0.9, 0.98)),
    clip_grad=dict(max_norm=5.0),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=30),  # warm-up
    dict(type="CosineAnnealingLR", by_epoch=False, begin=30, end=None, eta_min=1e-6),  # end: the task's max_iters
]
train_cfg = dict(by_epoch=False)  # a task adds max_iters (and val_interval)
