"""Image captioning: fine-tune the PrefixLM decoder (with the whole backbone) on the training captions, test on
the Karpathy test split.

Training is the pre-training PrefixLM loss alone, one sample per training caption (CaptionDataset,
``copa_bench.vlp_collate``). Testing captions each image of the Karpathy ``test`` split once
(RetrievalDataset: one row per image, its five captions the references) and scores corpus BLEU-4 and
CIDEr-D (CaptionMetric). Decoding is beam search with 3 beams (``num_beams = 3``, BLIP's setting;
``length_penalty`` 1 ranks hypotheses by mean token log-probability), at most 20 tokens; ``num_beams = 1``
decodes greedily, about twice as fast: on the tiny benchmark greedy captions tend to repeat one phrase
("a green square and a green square and ...") where beam search finds more varied ones and scores higher.
Validation uses the Karpathy ``val`` split the same way. Only models with a decoder apply (not vilt).

The tiny schedule is 300 iterations of 64 captions (about 1.3 epochs) at lr 5e-4; ALBEF from its tiny pre-training
reaches BLEU-4 17.9 / CIDEr 45.4 on test with 3 beams (greedy: 14.1 / 39.6), where the most frequent training
caption given to every image scores 11.3 / 18.8.
"""

_base_ = ["../_base_/default_runtime.py", "../_base_/schedules/adamw_warmup_cosine.py",
          "../_base_/datasets/caption_pairs_train.py"]

batch_size = 64
max_iters = 300
# what the harness reads (harness/config_namespace.py): the task's declaration for tables, the gate, chance and
# suites (harness/taskspec.py), and its model
harness = dict(
    task_spec=dict(headline="cider", chance="majority_caption", requires=["decoder"], label="caption", order=50),
    task_model=dict(type="CaptionModel", tokenizer=None, num_beams=3, max_length=20, length_penalty=1.0),
)

pipeline = [dict(type="LoadImage"), dict(type="Resize", size=None), dict(type="ToTensor")]

train_dataloader = dict(batch_size=batch_size, dataset=dict(pipeline=pipeline))  # the training captions
val_dataloader = dict(
    batch_size=64,
    num_workers=0,
    sampler=dict(type="DefaultSampler", shuffle=False),
    collate_fn=dict(type="copa_bench.caption_collate"),
    dataset=dict(type="RetrievalDataset", data_root=None, ann_file="karpathy/dataset_coco.json", split="val",
                 pipeline=pipeline),
)
val_evaluator = dict(type="CaptionMetric")
test_dataloader = dict(val_dataloader, dataset=dict(val_dataloader["dataset"], split="test"))
test_evaluator = val_evaluator

train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
val_cfg = dict()
test_cfg = dict()

optim_wrapper = dict(optimizer=dict(lr=5e-4))
param_scheduler = [dict(_base_.param_scheduler[0], end=30),  # warm-up from a tenth of the rate
                   dict(_base_.param_scheduler[1], begin=30, end=max_iters)]  # cosine to 1e-6

default_hooks = dict(checkpoint=dict(interval=max_iters))
