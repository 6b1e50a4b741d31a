"""recipe: COPA's pre-training recipe against the one before it, at tiny scale, 3 seeds.

The default variant is today's recipe (``zoo.build.SHARED_PASSES``): the text-free path pruned against the image
[CLS] and ITM negatives reusing each image's own text-aware tokens, so a pre-training step runs no unpruned ViT
pass. ``separate_passes`` is the recipe before it (``zoo.build.SEPARATE_PASSES``): the text-free path on the
whole ViT and a text-aware ViT suffix per ITM negative. Same schedules as the downstream suite (pre-training
1,000 iterations from the object-trained ViT, VQA 1,000). Results: results/README.md, "Pre-training recipe".
"""

_base_ = ["../_base_/suites/all_tasks.py"]  # test_only; tasks: its own

scale = "tiny"
seeds = [0, 1, 2]
models = ["copa"]
tasks = ["retrieval_zeroshot", "patch_detection", "vqa"]
max_iters = dict(pretrain=1000)
variants = {
    "": {},
    "separate_passes": dict(model=dict(text_free="unreduced", itm_negatives="rerun")),
}
# every seed's pre-training starts from seed 0's object-trained ViT (`copa-bench train --model copa --task
# vision_pretrain --seed 0` makes it): the seeds vary pre-training and fine-tuning, not the ViT initialisation
vision_init = "work_dirs/vision_pretrain/vit_tiny_seed0/vision_encoder.pth"
