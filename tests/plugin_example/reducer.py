"""A patch reducer: keep the patches whose tokens have the largest L2 norm (text-free, no parameters)."""

from torch import Tensor, nn

from copa.reducers import PatchReducer
from copa.registry import MODELS


@MODELS.register_module()
class NormReducer(PatchReducer):
    """Scores each patch token by its L2 norm; the skeleton keeps the top ``keep_ratio`` and fuses the rest."""

    def score(self, tokens: Tensor, text: Tensor | None, qkv: Tensor | None, block: nn.Module) -> Tensor:
        return tokens[:, 1:].norm(dim=-1)  # [CLS] excluded: one score per patch
