"""ToMe (Bolya et al., ICLR 2023), as the official code runs it: in every ViT block, between attention and MLP,
``r`` tokens merge into size-weighted means by bipartite soft matching on the block's keys ([CLS] protected),
sizes carried through the forward, proportional attention on (``prop_attn``). ``keep_ratio`` (default 0.5) is
turned into the ``r`` whose MACs per pair match COPA's keep-and-fuse budget at that ratio (tiny: r = 10,
base: r = 20; see ``zoo.build``). Override e.g. ``keep_ratio=0.3``, or ``reducer=dict(type='ToMeReducer', r=16)``.
"""
model = dict(type='tome', scale='tiny')
