"""downstream: every task for the five models of the main comparison at tiny scale, one seed, with twice the task
config's pre-training (1,000 iterations of 32 captions). At 500 iterations the matching losses have barely left
their plateau (copa: val ITM AUC 0.73) and VQA sits at the answer prior; twice as long lifts ITM AUC and retrieval
for every model and VQA just above the prior (README, "The downstream suite"). Fine-tuning and evaluation as in
the paper suite (the task configs' schedules, full test sets). About 70 min on 2 cores as two `--models` halves
side by side at one thread each, which is what `copa-bench run downstream --workers 2` does by itself."""

scale = "tiny"
seeds = [0]
models = ["albef", "copa", "trips", "evit", "random"]
tasks = ["retrieval_zeroshot", "patch_detection", "retrieval", "vqa", "nlvr2", "caption", "grounding"]
test_only = ["retrieval_zeroshot", "patch_detection"]
max_iters = dict(pretrain=1000)
