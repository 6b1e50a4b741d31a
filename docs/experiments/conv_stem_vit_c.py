"""ViT-C's convolutional stem (Xiao et al., "Early Convolutions Help Transformers See Better", NeurIPS 2021) in
place of the tiny ViT's linear patch projection, installed by replacing ``copa.vision.PatchEmbed`` before any model
is built: the measurement script of the "VQA and NLVR2 at chance" section of docs/experiments/history.md.

3x3 convolutions of stride 2 with BatchNorm and ReLU down to the patch stride (widths 32, 64, 128 for 8 px patches
at tiny scale), then a 1x1 projection; the token grid is the linear projection's. Every process that builds a model
must import this module first; for a suite's worker processes (spawned, so they re-import) put a
``sitecustomize.py`` that imports it on ``PYTHONPATH``. As run::

    python docs/experiments/conv_stem_vit_c.py vision WORK_DIR 1200 [DATA]   # the ViT initialisation, seed 0
    python docs/experiments/conv_stem_vit_c.py probe [--data DATA] FILE      # docs/experiments/shape_probe.py on it

The vision pre-training job is configs/tasks/vision_pretrain.py unchanged; DATA defaults to data/tiny.
"""

from __future__ import annotations

import math
import runpy
import sys
from pathlib import Path

import torch.nn as nn
from torch import Tensor

import copa.vision


class ConvPatchEmbed(nn.Module):
    """timm ``PatchEmbed``'s interface (``img_size``, ``patch_size``, ``grid_size``, ``num_patches``; ``(B, N, D)``
    tokens out) over a convolutional stem."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int, **unused) -> None:
        super().__init__()
        self.img_size = (img_size, img_size)
        self.patch_size = (patch_size, patch_size)
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        levels = int(math.log2(patch_size))
        widths = [max(embed_dim >> (levels - 1 - i), 8) for i in range(levels)]
        layers: list[nn.Module] = []
        channels = in_chans
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
            channels = width
        layers.append(nn.Conv2d(channels, embed_dim, 1))
        self.proj = nn.Sequential(*layers)

    def forward(self, images: Tensor) -> Tensor:
        return self.proj(images).flatten(2).transpose(1, 2)


copa.vision.PatchEmbed = ConvPatchEmbed


def main(argv: list[str]) -> None:
    if argv[:1] == ["vision"] and len(argv) >= 3:
        from harness.runner import _register_everything, build_vision_config, train

        _register_everything()
        data = argv[3] if len(argv) > 3 else None
        cfg = build_vision_config("tiny", data, seed=0, work_dir=argv[1], max_iters=int(argv[2]))
        train(cfg)
    elif argv[:1] == ["probe"]:
        sys.argv = ["shape_probe.py", *argv[1:]]
        runpy.run_path(str(Path(__file__).with_name("shape_probe.py")), run_name="__main__")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
