"""downstream: every task for the five models of the main comparison at tiny scale, one seed, with twice the task
config's pre-training (1,000 iterations of 32 captions) from the object-trained ViT, and the task configs'
fine-tuning schedules (VQA and NLVR2 1,000 iterations each) on full test sets. It is the suite that answers
whether each task is above its chance row for every model (README, "The downstream suite"). About 100 min on 2
cores with the ViT initialisation (~9 min) made first: `copa-bench run downstream --workers 2`."""

scale = "tiny"
seeds = [0]
models = ["albef", "copa", "trips", "evit", "random"]
tasks = ["retrieval_zeroshot", "patch_detection", "retrieval", "vqa", "nlvr2", "caption", "grounding"]
test_only = ["retrieval_zeroshot", "patch_detection"]
max_iters = dict(pretrain=1000)
