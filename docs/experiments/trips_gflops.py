"""Which setting gives TRIPS's published 36.63 -> 20.89 GFLOPs (224 px) and 76.03 -> 55.60 (384 px)?

Analytic counts of copa.macs (1 MAC = 1 multiply-add) for the base scale (ViT-B/16, 6-layer BERT-base text
encoder, 6 fusion layers, text 40 tokens), checked against copa.macs.pair_macs on built models."""
import itertools
import math

D, MLP, PATCH_DIM, TEXT_LAYERS, FUSION_LAYERS, DEPTH = 768, 3072, 3 * 16 * 16, 6, 6, 12
PUBLISHED = {224: (36.63, 20.89), 384: (76.03, 55.60)}


def layer(n, d=D, mlp=MLP):
    return n * (4 * d * d + 2 * d * mlp) + 2 * n * n * d


def schedule(patches, layers, keep, fused=True):
    lengths, n = [], patches + 1
    for i in range(DEPTH):
        if i in layers:
            k = min(n - 1, math.ceil(keep * (n - 1) - 1e-9))
            n = n if k >= n - 1 else k + 1 + int(fused)
        lengths.append(n)
    return lengths


def pair(size, layers=(), keep=1.0, text_len=40, fused=True, parts=("vision", "text", "fusion")):
    patches = (size // 16) ** 2
    lengths = schedule(patches, layers, keep, fused)
    vision = patches * PATCH_DIM * D + sum(layer(n) for n in lengths)
    for i in layers:  # TRIPS-style score: text query through the block's q weights, one row of attention
        vision += (lengths[i - 1] - 1) * D + D * D
    vision += D * D if layers else 0  # text [CLS] -> vision width
    text = TEXT_LAYERS * layer(text_len)
    n_vis = lengths[-1]
    cross = 2 * text_len * D * D + 2 * n_vis * D * D + 2 * text_len * n_vis * D
    fusion = FUSION_LAYERS * (layer(text_len) + cross)
    got = dict(vision=vision, text=text, fusion=fusion)
    return sum(got[p] for p in parts) / 1e9


if __name__ == "__main__":
    # 1. the project's count (matches copa.macs.pair_macs: albef 22.740, trips(5,10,0.7) 18.393 at 224)
    for size in (224, 384):
        a, t = pair(size), pair(size, (5, 10), 0.7)
        pa, pt = PUBLISHED[size]
        print(f"{size}px  albef {a:6.2f}  trips(5,10,0.7) {t:6.2f}  ratio {a / t:.3f}   published {pa} -> {pt}"
              f"  ratio {pa / pt:.3f}  saving {pa - pt:.2f}  (ours {a - t:.2f})")
    # 2. the most any pruning from block 5 on can save (one token left), per count
    for size in (224, 384):
        for parts in (("vision",), ("vision", "text", "fusion")):
            most = pair(size, parts=parts) - pair(size, (5,), 1e-9, fused=False, parts=parts)
            print(f"{size}px {'+'.join(parts):20s} max saving pruning at block 5: {most:6.2f} GMACs"
                  f" = {2 * most:6.2f} GFLOPs (2 per MAC)")
    # 3. keep ratio at blocks (5, 10) that would reproduce the published ratio, per count
    for size in (224, 384):
        pa, pt = PUBLISHED[size]
        for parts in (("vision",), ("vision", "text", "fusion")):
            best = min((abs(pair(size, parts=parts) / pair(size, (5, 10), k / 1000, parts=parts) - pa / pt), k)
                       for k in range(5, 1000, 5))
            print(f"{size}px {'+'.join(parts):20s} ratio {pa / pt:.3f} at (5, 10) needs keep {best[1] / 1000:.3f}")
    # 4. any schedule (1-3 points, keep 0.05..0.95) whose savings grow from 224 to 384 as the published ones do
    want = (PUBLISHED[384][0] - PUBLISHED[384][1]) / (PUBLISHED[224][0] - PUBLISHED[224][1])
    lo = min((pair(384) - pair(384, ls, k / 100)) / (pair(224) - pair(224, ls, k / 100))
             for r in (1, 2, 3) for ls in itertools.combinations(range(1, DEPTH), r) for k in range(5, 100, 5))
    print(f"saving(384)/saving(224): published {want:.2f}; smallest over every schedule {lo:.2f}")
    # 5. the unpruned model: 384 - 224 difference and what is left over
    for parts in (("vision",), ("vision", "fusion"), ("vision", "text", "fusion")):
        d_ours = pair(384, parts=parts) - pair(224, parts=parts)
        d_pub = PUBLISHED[384][0] - PUBLISHED[224][0]
        left = PUBLISHED[224][0] - pair(224, parts=parts)
        print(f"{'+'.join(parts):20s} 384-224: ours {d_ours:.2f} GMACs, published {d_pub:.2f} "
              f"(published/ours {d_pub / d_ours:.2f}); 224 px left over {left:.2f}")
