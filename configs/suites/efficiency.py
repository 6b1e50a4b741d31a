"""efficiency: paper-scale (ViT-B/16, 6-layer BERT-base text and fusion encoders) multiply-adds, parameters,
throughput and latency of every model at 224 and 384 px, speedups measured against albef in one process
(interleaved rounds). No training: FLOPs and speed do not depend on the weights."""

scale = "base"
seeds = [0]
models = ["albef", "copa", "trips", "evit", "random", "tome", "vilt"]
tasks = []
efficiency = dict(scale="base", image_sizes=[224, 384], batch=4, repeats=5)
