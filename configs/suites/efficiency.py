"""efficiency: paper-scale (ViT-B/16, 6-layer BERT-base text and fusion encoders) cost of every model at 224 and
384 px, per task and phase (``copa-bench profile --tasks``, harness/profiling/efficiency.py): the pre-training
step (every loss with its negatives: forward + backward + AdamW step), and inference as each task runs it
(retrieval per text query over a 5,000-image gallery with k = 16 cached re-ranks, the index per gallery image,
VQA per question, NLVR2 per statement, captioning per image with the task's 3 beams, grounding per expression,
the image-text pair). MACs from fvcore over each call; speedups against albef measured in one process
(interleaved rounds). No training to convergence: FLOPs and speed do not depend on the weights.

The spec also takes ``device`` and ``precision`` (default: the suite run's, ``copa-bench run --device``), and
``compile``. Fine-tuning steps are further phases: add e.g. ``"vqa:train"`` to ``tasks``."""

scale = "base"
seeds = [0]
models = ["albef", "copa", "trips", "evit", "random", "tome", "vilt"]
tasks = []
efficiency = dict(scale="base", image_sizes=[224, 384], batch=8, repeats=5,
                  tasks=["pair", "pretrain", "retrieval:infer", "index", "vqa:infer", "nlvr2:infer", "caption:infer",
                         "grounding:infer"])
