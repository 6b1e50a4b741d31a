"""copa-bench's mmengine registries: children of mmengine's, under one scope, so configs name our
classes by type and the Runner finds them (``default_scope='copa_bench'``)."""

from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import FUNCTIONS as MMENGINE_FUNCTIONS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import LOOPS as MMENGINE_LOOPS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import Registry

SCOPE = "copa_bench"

DATASETS = Registry("dataset", parent=MMENGINE_DATASETS, scope=SCOPE, locations=["harness.data.datasets"])
TRANSFORMS = Registry("transform", parent=MMENGINE_TRANSFORMS, scope=SCOPE, locations=["harness.data.transforms"])
FUNCTIONS = Registry("function", parent=MMENGINE_FUNCTIONS, scope=SCOPE, locations=["harness.data.collate"])
METRICS = Registry("metric", parent=MMENGINE_METRICS, scope=SCOPE, locations=["harness.metrics"])
HOOKS = Registry("hook", parent=MMENGINE_HOOKS, scope=SCOPE, locations=["harness.hooks"])
LOOPS = Registry("loop", parent=MMENGINE_LOOPS, scope=SCOPE, locations=["harness.tasks"])
# a task's chance predictor (its declaration's ``chance``): ``fn(cfg) -> {metric: value}``, harness/chance.py
CHANCE = Registry("chance predictor", scope=SCOPE, locations=["harness.chance"])
