"""smoke: every model on every task at tiny scale, one seed, in minutes on 2 cores (CI runs it and gates it
against results/baseline/smoke.json). Schedules are short and evaluation sets small, so the figures are
for catching regressions, not for papers (see the paper suite)."""

scale = "tiny"
seeds = [0]
models = ["albef", "copa", "trips", "evit", "random", "tome", "vilt"]
tasks = ["retrieval_zeroshot", "patch_detection", "retrieval", "vqa", "nlvr2", "caption", "grounding"]
test_only = ["retrieval_zeroshot", "patch_detection"]
max_iters = dict(pretrain=200, retrieval=40, vqa=60, nlvr2=60, caption=40, grounding=60)
eval_limit = dict(pretrain=256, retrieval_zeroshot=100, retrieval=100, patch_detection=256, vqa=300, nlvr2=250,
                  caption=100, grounding=300)
efficiency = dict(scale="tiny", batch=4, repeats=5)
