"""downstream: every task for the seven models of the main comparison at tiny scale, one seed, with twice the task
config's pre-training (1,000 iterations of 32 captions) from the object-trained ViT, the task configs'
fine-tuning schedules (VQA 1,000 iterations) but NLVR2 at 2,000, on full test sets. It is the suite that answers
whether each task is above its chance row for every model (results/README.md). NLVR2 runs twice the
task config's 1,000 iterations because random, at COPA's token budget, had not left chance in 1,000 (training loss
0.68 against ln 2, val 48.8); at 2,000 its loss ends at 0.64 and every test-time draw scores 54.8-57.2 on val and
test (README). About 2 h on 2 cores for five models (estimated: 82 min measured with NLVR2 at 1,000, ~40 min more
for the five NLVR2 jobs at 2,000) with the ViT initialisation (~20 min) made first, and about 7/5 of that since ToMe
and ViLT joined (not yet run): `copa-bench run downstream`."""

_base_ = ["../_base_/suites/all_tasks.py"]  # tasks and test_only: every task

scale = "tiny"
seeds = [0]
models = ["albef", "copa", "trips", "evit", "random", "tome", "vilt"]
workers = 2  # as its stored rows ran: one torch thread per job (configs/suites/paper.py says why)
max_iters = dict(pretrain=1000, nlvr2=2000)
