"""A plugin as a user would write it, outside copa-bench: a reducer, a model over it, a metric and a task
(docs/extending.md walks through it; tests/test_plugins.py runs it). Load it with
``copa-bench --plugin plugin_example ...`` with this directory's parent on ``PYTHONPATH``."""

from pathlib import Path

from harness.plugins import register_model
from harness.taskspec import register_task_dir
from zoo import METHODS

from .metric import TopPatchHitMetric
from .reducer import NormReducer

# the model: the 'random' baseline's budget and losses, with this package's reducer
register_model("normtop", dict(METHODS["random"], reducer=dict(type="NormReducer")))
# the task: every config in tasks/ (patch_top1.py) with its declaration
register_task_dir(Path(__file__).parent / "tasks")

__all__ = ["NormReducer", "TopPatchHitMetric"]
