"""Cost per task and phase (``copa-bench profile --tasks``): fvcore's count of each call a task makes against an
independent analytic count, and the structure of the rows, tables and store rows. No speed is asserted.

The analytic counts (equal to fvcore's, to the multiply-add) are composed here from ``copa.macs``'s layer
formulas (matmuls and attention) plus what fvcore also counts: 5 per element for every LayerNorm. A ViT block or
BERT layer has two LayerNorms, a fusion (or decoder) layer three (self-attention, cross-attention, feed-forward);
``vision_to_text`` is the identity when the widths agree (both scales here).
"""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from copa.macs import encoder_layer_macs, fusion_layer_macs
from harness.profiling import efficiency as eff
from harness.profiling.efficiency import parse_tasks, profile_tasks, retrieval_query_counts
from harness.profiling.speed import peak_tflops
from zoo import build_model

TEXT_LEN = 40
K = 5
PROV = {"git_commit": "abc" * 13 + "d", "git_dirty": False, "versions": {k: "1.0" for k in (
    "python", "torch", "mmengine", "transformers", "timm", "fvcore")}, "machine": {"cpu": "test cpu", "threads": 2}}
GALLERY = 100


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    # with ALBEF's momentum model (tiny scale pre-trains without it): its forward must be counted too
    return {name: build_model(name, scale="tiny", momentum=0.995).eval() for name in ("albef", "copa", "evit")}


# ------------------------------------------------------------------------------------------ analytic pieces


def ln(tokens: int, dim: int) -> int:
    return 5 * tokens * dim


def widths(model) -> tuple[int, int, int, int]:
    """(vision width, vision MLP width, text width, text MLP width)."""
    cfg = model.text_config
    return (model.vision.embed_dim, model.vision.blocks[0].mlp.fc1.out_features, cfg.hidden_size,
            cfg.intermediate_size)


def vit_block(tokens: int, dim: int, mlp: int) -> int:
    return encoder_layer_macs(tokens, dim, mlp) + 2 * ln(tokens, dim)


def text_encoder(model, length: int = TEXT_LEN) -> int:
    _, _, dim, mlp = widths(model)
    return ln(length, dim) + model.text_config.num_hidden_layers * vit_block(length, dim, mlp)


def fusion(model, n_visual: int, length: int = TEXT_LEN) -> int:
    _, _, dim, mlp = widths(model)
    return len(model.fusion.layer) * (fusion_layer_macs(length, n_visual, dim, mlp) + 3 * ln(length, dim))


def patch_embed(model) -> int:
    proj = model.vision.patch_embed.proj
    return model.vision.num_patches * proj.in_channels * proj.kernel_size[0] * proj.kernel_size[1] * proj.out_channels


def reducer(model, n_tokens: int) -> int:
    """A reducer's own multiply-adds on ``n_tokens`` tokens ([CLS] included) entering it: its scores, then the
    fused token, a softmax-weighted sum over the N patches ((1, N) x (N, D), zero weight on the kept ones)."""
    dim = model.vision.embed_dim
    kind = type(next(iter(model.vision.reducers.values()))).__name__
    n = n_tokens - 1
    fuse = n * dim
    if kind == "TextAwarePatchDetector":  # LN of patches and text, two projections, one logit per patch
        hidden = next(iter(model.vision.reducers.values())).patch_proj.out_features
        return ln(n, dim) + ln(1, dim) + n * dim * hidden + dim * hidden + n * hidden + fuse
    if kind == "CLSAttentionReducer":  # [CLS] attention over every token, summed over heads
        return n_tokens * dim + fuse
    raise NotImplementedError(kind)


def vit(model, schedule: list[int], start: int = 0, embed: bool = True, reduce: bool = True) -> int:
    """ViT blocks ``start``.. over ``schedule`` (tokens entering each block), the reducers at their points
    (``reduce``), the final LayerNorm, and the patch embedding when ``embed``."""
    dim, mlp, _, _ = widths(model)
    total = patch_embed(model) if embed else 0
    for block in range(start, len(schedule)):
        if reduce and block in model.vision.reduction_layers:
            total += reducer(model, schedule[block - 1])
        total += vit_block(schedule[block], dim, mlp)
    return total + ln(schedule[-1], dim)


def unreduced(model) -> list[int]:
    return [model.vision.num_patches + 1] * model.vision.depth


def decoder_step(model, length: int, n_visual: int) -> int:
    """The PrefixLM decoder over ``length`` tokens: embedding LN, layers, LM head (transform + vocabulary)."""
    _, _, dim, mlp = widths(model)
    layers = len(model.decoder.model.bert.encoder.layer)
    body = ln(length, dim) + layers * (fusion_layer_macs(length, n_visual, dim, mlp) + 3 * ln(length, dim))
    return body + length * (dim * dim + ln(1, dim) + dim * model.vocab_size)


def pair(model) -> int:
    """encode_pair: text, the text-aware ViT, fusion (text [CLS] projected for text-aware reducers)."""
    schedule = model.vision.token_schedule()
    bridge = model.text_to_vision.in_features * model.text_to_vision.out_features if model.vision.text_aware else 0
    return text_encoder(model) + bridge + vit(model, schedule) + fusion(model, schedule[-1])


def count(counts: dict) -> int:
    return sum(r.total for r in counts.values())


# ----------------------------------------------------------------------------------------------- retrieval


@pytest.mark.parametrize("name", ["albef", "evit", "copa"])
def test_retrieval_rerank_is_counted_on_the_cached_call(models, name):
    """k re-ranks via itm_logits_cached: text encoder per pair, then for a text-agnostic model fusion only (its
    visual tokens are cached), for a text-aware one the ViT from the cached prefix on (its reducers read the
    query) plus fusion. The old column charged the whole ViT to every pair."""
    model = models[name]
    counts = retrieval_query_counts(model, k=K, gallery=GALLERY, text_len=TEXT_LEN)
    _, _, dim, _ = widths(model)
    schedule = model.vision.token_schedule()
    per_pair = text_encoder(model) + fusion(model, schedule[-1]) + 2 * dim  # + ITM head
    if model.vision.text_aware:
        per_pair += dim * model.vision.embed_dim  # text [CLS] to vision width
        per_pair += vit(model, schedule, start=model.vision.shared_depth, embed=False)
    assert counts["rerank"].total == K * per_pair
    embed = model.vision_proj.out_features
    assert counts["query_text"].total == text_encoder(model) + dim * embed
    assert counts["itc_gallery"].total == GALLERY * embed
    if not model.vision.text_aware:  # re-ranking costs less than k pairs: the ViT is not run per pair
        assert counts["rerank"].total < K * (pair(model) - vit(model, schedule) + patch_embed(model))


@pytest.mark.parametrize("name", ["albef", "evit"])
def test_index_counts_gallery_cache_and_image_features_once_per_image(models, name):
    model = models[name]
    counts = eff.image_index_counts(model)
    schedule = model.vision.token_schedule()
    assert counts["gallery_cache"].total == vit(model, schedule)  # the visual tokens
    itc = vit(model, schedule) + model.vision.embed_dim * model.vision_proj.out_features
    assert counts["image_features"].total == itc


def test_index_cache_of_a_text_aware_model_is_its_shared_prefix(models):
    model = models["copa"]
    dim, mlp, _, _ = widths(model)
    prefix = patch_embed(model) + model.vision.shared_depth * vit_block(model.vision.num_patches + 1, dim, mlp)
    assert eff.image_index_counts(model)["gallery_cache"].total == prefix


def test_legacy_retrieval_column_follows_the_cached_call(models):
    """gmacs_retrieval_query of the pair table is the per-query count above, not text + k whole pairs."""
    rows = eff.profile_models({"albef": models["albef"]}, 64, batch=1, repeats=1, retrieval_k=K, gallery=GALLERY)
    counts = retrieval_query_counts(models["albef"], k=K, gallery=GALLERY)
    assert rows[0].gmacs_retrieval_query * 1e9 == pytest.approx(count(counts))
    assert rows[0].gmacs_image_index * 1e9 == pytest.approx(count(eff.image_index_counts(models["albef"])))


# ------------------------------------------------------------------------------------- the other task phases


def _plan_macs(model, task: str, phase: str, batch: int = 2) -> tuple[float, eff._Plan]:
    context = eff._Context(batch, TEXT_LEN, torch.device("cpu"), "fp32", K, GALLERY, 50, 0)
    model.train(phase == "train")
    plan = eff.PLANS[(task, phase)](model, context)
    macs, _, _ = eff.count_plan(plan, phase == "train")
    model.eval()
    return macs, plan


@pytest.mark.parametrize("name", ["albef", "copa"])
def test_inference_phases_match_analytic(models, name):
    model = models[name]
    _, _, dim, _ = widths(model)
    schedule = model.vision.token_schedule()
    one = pair(model)
    assert _plan_macs(model, "pair", "infer")[0] == one
    vqa = one + dim * 2 * dim + ln(1, 2 * dim) + 2 * dim * 50  # ViLT's head over 50 answers here
    assert _plan_macs(model, "vqa", "infer")[0] == vqa
    nlvr2 = 2 * one + (2 * dim) ** 2 + ln(1, 2 * dim) + 2 * dim * 2  # two pairs, then the head on both [CLS]
    assert _plan_macs(model, "nlvr2", "infer")[0] == nlvr2
    tokens = schedule[-1] - 1  # visual tokens without [CLS]
    head = 2 * dim * dim + tokens * dim * dim + tokens * (dim * dim + 4 * dim)  # query, condition; key; box MLP
    assert _plan_macs(model, "grounding", "infer")[0] == one + head


@pytest.mark.parametrize("name", ["albef", "evit"])
def test_caption_generation_matches_analytic(models, name):
    """Beam search runs every beam from the first step and re-reads the whole prefix at each step (no KV cache);
    EOS is held down, so it decodes max_length - 1 steps."""
    model = models[name]
    macs, plan = _plan_macs(model, "caption", "infer")
    beams, length = plan.info["beams"], plan.info["max_length"]
    free = model.vision.token_schedule()  # text-agnostic reducers prune the text-free path too
    expected = vit(model, free) + beams * sum(decoder_step(model, t, free[-1]) for t in range(1, length))
    assert macs == expected


def pretraining_step(model, vision: int, batch: int) -> int:
    """One sample of the pre-training loss at batch B, given its ViT cost: text encoder twice (the caption, then
    the masked caption for MLM), ITC (projections; with a momentum model four rows of B + queue similarities,
    the model's and the momentum model's in both directions, else one row of B), ITM on the positive and 2 mined
    negatives (fusion + head), MLM (fusion + head on every token), PrefixLM decoder over the caption; every
    fusion and the decoder see the ViT's final token count. Plus :func:`momentum_forward`."""
    v_dim, _, dim, _ = widths(model)
    n_visual, embed = model.vision.token_schedule()[-1], model.vision_proj.out_features
    columns = 4 * (batch + model.image_queue.shape[0]) if model.momentum_model is not None else batch
    return (2 * text_encoder(model) + vision
            + v_dim * embed + dim * embed + columns * embed
            + 3 * (fusion(model, n_visual) + 2 * dim)
            + mlm(model, n_visual)
            + decoder_step(model, TEXT_LEN, n_visual)) + momentum_forward(model, vision)


def mlm(model, n_visual: int) -> int:
    _, _, dim, _ = widths(model)
    return fusion(model, n_visual) + TEXT_LEN * (dim * dim + ln(1, dim) + dim * model.vocab_size)


def momentum_forward(model, vision: int) -> int:
    """ALBEF's momentum model, forward only: the text encoder on the caption and on the masked caption, the same
    ViT paths as the model, both ITC projections, and MLM on the masked caption."""
    if model.momentum_model is None:
        return 0
    v_dim, _, dim, _ = widths(model)
    embed = model.vision_proj.out_features
    n_visual = model.vision.token_schedule()[-1]
    return 2 * text_encoder(model) + vision + v_dim * embed + dim * embed + mlm(model, n_visual)


def test_albef_pretraining_forward_matches_analytic(models):
    """ALBEF: one ViT pass (no reducer: text-free and text-aware are one path), and its momentum model's."""
    model = models["albef"]
    macs, plan = _plan_macs(model, "pretrain", "train", batch=4)
    vision = vit(model, model.vision.token_schedule())
    assert macs == pretraining_step(model, vision, batch=4)
    assert plan.info["no_backward_macs"] == momentum_forward(model, vision) > 0


def test_copa_pretraining_forward_matches_analytic(models):
    """COPA's recipe: the shared prefix once and two pruned suffixes (text-aware; text-free, its detectors scoring
    against the image [CLS] at the same cost), the text [CLS] projected to vision width once, and ITM negatives
    reusing the text-aware tokens, so ITM, MLM and PrefixLM see the pruned token count. Its momentum model runs
    the same paths."""
    model = models["copa"]
    schedule = model.vision.token_schedule()
    vision = vit(model, schedule) + vit(model, schedule, start=model.vision.shared_depth, embed=False)
    bridge = model.text_to_vision.in_features * model.text_to_vision.out_features
    macs, plan = _plan_macs(model, "pretrain", "train", batch=4)
    assert macs == pretraining_step(model, vision + bridge, batch=4)
    assert plan.info["no_backward_macs"] == momentum_forward(model, vision + bridge)


def test_training_step_counts_the_momentum_model_once():
    assert eff.step_macs(100, 30, train=True) == eff.TRAIN_FACTOR * 70 + 30
    assert eff.step_macs(100, 30, train=False) == 100


def test_parameter_count_leaves_out_the_momentum_copy(models):
    model = models["albef"]
    own = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("momentum_model."))
    assert eff.parameter_count(model) == own < sum(p.numel() for p in model.parameters())


# -------------------------------------------------------------------------------------- rows, tables, CLI


def test_parse_tasks():
    specs = parse_tasks("pretrain@32,vqa,retrieval:infer,pair")
    assert [(s.task, s.phase, s.batch) for s in specs] == [
        ("pretrain", "train", 32), ("vqa", "train", None), ("vqa", "infer", None), ("retrieval", "infer", None),
        ("pair", "infer", None)]
    assert eff.is_pair_only(parse_tasks("pair")) and not eff.is_pair_only(parse_tasks("pair@8"))
    for bad in ("clip", "pretrain:infer", "pair@0", "pair,pair", ""):
        with pytest.raises(ValueError):
            parse_tasks(bad)


def test_peak_table():
    assert peak_tflops("NVIDIA H200", "bf16") == pytest.approx(989.4)
    assert peak_tflops("cpu", "fp32") is None


@pytest.fixture(scope="module")
def task_rows(models):
    torch.manual_seed(0)
    two = {"albef": models["albef"], "copa": models["copa"]}
    return profile_tasks(two, 64, "pretrain,retrieval:infer,index,pair", batch=2, repeats=1, warmup=1,
                         retrieval_k=K, gallery=GALLERY)


def test_task_rows_structure(task_rows, models):
    assert [(r.model, r.task, r.phase) for r in task_rows] == [
        (m, t, p) for t, p in (("pretrain", "train"), ("retrieval", "infer"), ("index", "infer"), ("pair", "infer"))
        for m in ("albef", "copa")]
    for r in task_rows:
        assert r.device == "cpu" and r.precision == "fp32" and r.batch == 2 and r.image_size == 64
        assert r.peak_tflops is None and r.peak_fraction is None and r.threads >= 1
        assert r.achieved_tflops == pytest.approx(2 * r.gmacs_step * 1e9 * r.samples_per_s / 1e12)
        if r.phase == "train":  # 3 x what gets gradients, the momentum model's forward once
            assert r.gmacs < r.gmacs_step < 3 * r.gmacs
            assert r.macs_basis.startswith("3 x forward") and "momentum model" in r.macs_basis
        else:
            assert r.gmacs_step == r.gmacs and r.macs_basis == "forward"
        assert r.samples_per_s > 0 and r.peak_mem_mb is not None
        if r.model == "albef":
            assert r.speedup_macs == 1.0 and r.speedup_time == 1.0
        else:
            assert r.realised == pytest.approx(r.speedup_time / r.speedup_macs)
    by = {(r.model, r.task): r for r in task_rows}
    assert by[("albef", "retrieval")].retrieval_k == K and by[("albef", "retrieval")].gallery == GALLERY
    assert by[("albef", "retrieval")].gmacs * 1e9 == pytest.approx(count(retrieval_query_counts(
        models["albef"], k=K, gallery=GALLERY)), rel=1e-9)
    assert by[("albef", "pair")].gmacs * 1e9 == pytest.approx(pair(models["albef"]), rel=1e-9)
    assert by[("albef", "pretrain")].optimizer.startswith("AdamW")
    table = eff.format_task_table(task_rows)
    assert "| copa | pretrain | train |" in table and "3 x fwd" in table and "copa / albef: pretrain train" in table


def test_task_rows_go_to_the_store_and_tables(task_rows, tmp_path):
    from harness import results, tables

    stored = results.efficiency_rows(task_rows, suite="ci", scale="tiny", job_hash="j", prov=PROV)
    metrics = {r["metric"] for r in stored}
    assert {"pretrain.train.speedup_time", "retrieval.infer.gmacs", "index.infer.samples_per_s",
            "pair.infer.achieved_tflops"} <= metrics
    assert {"gmacs", "pairs_per_s", "speedup_time", "speedup_flops", "params_m"} <= metrics  # from the pair row
    for r in stored:
        results.validate_row(r)
    accuracy = [results.make_row(suite="ci", model=m, task="retrieval", metric="r_mean", value=v, seed=0, scale="tiny",
                                 job_hash="a", data_hash="", prov=PROV) for m, v in (("albef", 70.0), ("copa", 69.0))]
    results.append_rows(tmp_path, accuracy + stored)
    built = {t.name: t for t in tables.build_tables(tmp_path)[0]}
    main = built["main"].frame
    assert list(main.columns) == ["model", "retrieval r_mean", "GMACs", "pairs/s", "speedup (pre-train step)",
                                  "speedup (inference, pair)"]
    assert float(main.loc[main.model == "albef", "speedup (pre-train step)"].item()) == 1.0
    costs = built["task_costs"].frame
    assert list(costs.columns[:3]) == ["model", "task", "phase"] and "TFLOP/s" in costs.columns
    assert len(costs) == len(task_rows)


def _args(tmp_path, **kw) -> argparse.Namespace:
    args = dict(models="albef,copa", scale="tiny", image_size=None, batch=2, repeats=1, threads=None,
                reference="albef", retrieval_k=K, json=str(tmp_path / "p.json"), csv=str(tmp_path / "p.csv"),
                tasks="pair", device="cpu", precision="fp32", compile=False)
    args.update(kw)
    return argparse.Namespace(**args)


def test_profile_command_with_tasks(tmp_path, capsys):
    from harness.profiling.cli import run_profile

    assert run_profile(_args(tmp_path, tasks="vqa:infer,pair")) == 0
    rows = json.loads((tmp_path / "p.json").read_text())
    assert [(r["model"], r["task"], r["phase"]) for r in rows] == [
        ("albef", "vqa", "infer"), ("copa", "vqa", "infer"), ("albef", "pair", "infer"), ("copa", "pair", "infer")]
    assert rows[0]["device"] == "cpu" and rows[0]["precision"] == "fp32" and rows[0]["compiled"] is False
    assert rows[0]["unit"] == "question" and set(rows[0]["gmacs_parts"]) >= {"backbone.vision", "vqa_head"}
    out = capsys.readouterr().out
    assert "| copa | vqa | infer | question | 64 | 2 |" in out and "copa / albef: vqa infer" in out
    header = (tmp_path / "p.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["model", "task", "phase", "unit"] and "gmacs_parts" not in header


def test_profile_command_pair_table_reports_realised(tmp_path, capsys):
    from harness.profiling.cli import run_profile

    assert run_profile(_args(tmp_path)) == 0
    rows = json.loads((tmp_path / "p.json").read_text())
    copa = rows[1]
    assert copa["realised"] == pytest.approx(copa["speedup_time"] / copa["speedup_flops"])
    assert copa["precision"] == "fp32" and "realised" in capsys.readouterr().out


@pytest.mark.parametrize("kw, field", [(dict(tasks="clip"), "--tasks"), (dict(precision="fp16"), "--precision"),
                                       (dict(device="tpu"), "--device")])
def test_profile_command_bad_task_device_precision(tmp_path, kw, field):
    from harness.errors import InputError
    from harness.profiling.cli import run_profile

    with pytest.raises(InputError, match=field):
        run_profile(_args(tmp_path, **kw))


def test_suite_efficiency_job_with_tasks(tiny_benchmark, tmp_path, write_suite):
    """A suite's efficiency spec takes tasks, device and precision; its rows say what was timed where."""
    from harness.results import read_rows
    from harness.suite import run_suite

    spec = dict(scale="tiny", batch=2, repeats=1, threads=1, tasks=["pretrain", "pair"], device="cpu",
                precision="fp32")
    suite = write_suite(tmp_path / "eff.py", tiny_benchmark, ["albef", "copa"], [], max_iters={}, eval_limit={},
                        efficiency=spec)
    threads = torch.get_num_threads()
    try:
        counts = run_suite(suite, results_dir=tmp_path / "store", say=lambda message: None)
        again = run_suite(suite, results_dir=tmp_path / "store", say=lambda message: None)
    finally:
        torch.set_num_threads(threads)
    assert counts["run"] == 1 and again["skipped"] == 1
    rows = read_rows(tmp_path / "store")
    metrics = {r["metric"] for r in rows}
    assert {"pretrain.train.speedup_time", "pretrain.train.gmacs", "pair.infer.samples_per_s", "pairs_per_s"} <= metrics
    assert {(r["machine"]["device"], r["machine"]["precision"], r["machine"]["threads"]) for r in rows} == {
        ("cpu", "fp32", 1)}
    assert {r["value"] for r in rows if r["model"] == "albef" and r["metric"].endswith("speedup_time")} == {1.0}
