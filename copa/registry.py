"""The model registry of copa-bench.

A child of mmengine's root ``MODELS`` under the harness's scope (``copa_bench``), so an mmengine Runner with
``default_scope='copa_bench'``, or a plain ``MODELS.build(dict(type=...))``, finds the skeleton and COPA's
detector: the locations below are imported on first lookup, which registers them. The locations name only this
package's own modules: the baselines and the named models ('albef', 'copa', ..., 'vilt') are registered by the
zoo above it (``import zoo``, which ``harness`` does), so the method package never imports or names its
baselines (tests/test_layering.py). The root registry only sees this child once this module has been imported.
"""
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='copa_bench', locations=['copa.vlp', 'copa.patch_detector'])
