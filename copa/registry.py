"""The model registry of copa-bench.

A child of mmengine's root ``MODELS`` under the harness's scope (``harness.registry.SCOPE``), so an
mmengine Runner with ``default_scope='copa_bench'``, or a plain ``MODELS.build(dict(type=...))``, finds
the skeleton, the reducers and the named method builders ('albef', 'copa', 'trips', 'evit', 'random',
'tome', 'vilt'). The locations are imported on first lookup, which registers them all; the root registry
only sees this child once this module has been imported.
"""
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='copa_bench', locations=['copa.build', 'baselines'])
