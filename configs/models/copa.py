"""COPA: Text-aware Patch Detectors before blocks 2, 5, 8 (tiny: 2, 3, 4), keep 0.5 each, + PTA loss.

Defaults and the MAC budget behind them: zoo.build (module docstring). Override e.g.
``reduction_layers=(3, 6, 9), keep_ratio=0.4`` or ``loss_weights=dict(pta=0.5)``.
"""
model = dict(type='copa', scale='tiny')
