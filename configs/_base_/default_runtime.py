"""What every training task config shares (mmengine ``_base_``): the hooks and the log processor. A task sets its
checkpoint interval, e.g. ``default_hooks = dict(checkpoint=dict(interval=max_iters))``."""

default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=50),
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(type="CheckpointHook", by_epoch=False, max_keep_ckpts=1, save_last=True),
    sampler_seed=dict(type="DistSamplerSeedHook"),
)
log_processor = dict(by_epoch=False, window_size=50)
