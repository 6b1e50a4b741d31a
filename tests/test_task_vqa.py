"""VQA task unit: answer vocabulary, soft-score targets, head, loss, and fine-tuning + testing on the Runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.errors import InputError
from harness.tasks.vqa import VQAModel, build_answer_vocab, soft_scores, vqa_collate
from zoo import model_config

TOKENS = dict(vocab_size=60, pad_token_id=0, cls_token_id=1, sep_token_id=2, mask_token_id=3)
SMALL = dict(vision=dict(depth=2), text=dict(num_layers=1), fusion_layers=1, decoder_layers=0)


def _record(mca: str | None, humans: list[str]) -> dict:
    rec = {"answers": [{"answer": a, "answer_id": i + 1} for i, a in enumerate(humans)], "answer_type": "other"}
    if mca is not None:
        rec["multiple_choice_answer"] = mca
    return rec


RECORDS = [
    _record("Yes", ["yes"] * 10),
    _record("yes", ["yes"] * 10),
    _record("yes.", ["yes"] * 10),
    _record("no", ["no"] * 10),
    _record("two", ["2"] * 10),  # "two" and "2" are one answer after normalisation
    _record("2", ["2"] * 10),
    _record("no", ["no"] * 10),
    _record("red", ["red"] * 10),
    _record("blue", ["blue"] * 10),
    _record(None, ["green", "green", "red"]),  # no multiple_choice_answer: the humans' most common answer
]


def test_vocabulary_is_normalised_ranked_and_independent_of_order():
    vocab = build_answer_vocab(RECORDS, min_count=1)
    assert vocab == ["yes", "2", "no", "blue", "green", "red"]  # count desc, then alphabetical
    assert build_answer_vocab(list(reversed(RECORDS)), min_count=1) == vocab
    assert build_answer_vocab(RECORDS, min_count=2) == ["yes", "2", "no"]
    assert build_answer_vocab(RECORDS, min_count=1, max_answers=2) == ["yes", "2"]


def test_soft_scores_by_hand():
    index = {"2": 0, "yes": 1, "3": 2}
    # three humans say "2", one "two" (the same answer), one "3", five an answer outside the vocabulary
    target = soft_scores(["2", "2", "2", "two", "3", "4", "4", "4", "4", "4"], index)
    torch.testing.assert_close(target, torch.tensor([1.0, 0.0, 1 / 3]))
    target = soft_scores(["Two.", "2", "yes"], index)
    torch.testing.assert_close(target, torch.tensor([2 / 3, 1 / 3, 0.0]))


def test_vocabulary_and_targets_use_the_current_official_normalisation():
    """The labels are normalised as the official vqaEval.py does today (tests/test_metrics.py checks the tables
    against a copy of it): "-" and "!" are punctuation, ":" is not, contractions get ASCII apostrophes."""
    records = [_record("T-shirt", ["t shirt"] * 10), _record("t shirt", ["t shirt"] * 10),
               _record("yes!", ["yes"] * 10), _record("dont", ["don't"] * 10), _record("1:00", ["1:00"] * 10)]
    assert build_answer_vocab(records, min_count=1) == ["t shirt", "1:00", "don't", "yes"]
    index = {"t shirt": 0, "don't": 1, "1 00": 2}
    target = soft_scores(["T-shirt", "t shirt", "tshirt", "dont", "1:00"], index)
    torch.testing.assert_close(target, torch.tensor([2 / 3, 1 / 3, 0.0]))


def _answers_file(tmp_path: Path) -> Path:
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps({"annotations": RECORDS}))
    return path


def _model(tmp_path: Path, name: str = "albef", **kw) -> VQAModel:
    torch.manual_seed(0)
    backbone = model_config(name, "tiny", **TOKENS, **(SMALL if name != "vilt" else {"vision": dict(depth=2)}))
    return VQAModel(backbone, answers_file="annotations.json", data_root=str(tmp_path), min_count=1, **kw)


def _batch(n: int = 4, length: int = 7) -> dict:
    gen = torch.Generator().manual_seed(0)
    text_ids = torch.randint(5, 60, (n, length), generator=gen)
    text_ids[:, 0] = 1
    answers = [["yes"] * 10, ["2"] * 7 + ["two"] * 3, ["red"] * 10, ["green"] * 2 + ["blue"] * 8][:n]
    return dict(images=torch.randn(n, 3, 64, 64, generator=gen), text_ids=text_ids,
                text_mask=torch.ones(n, length, dtype=torch.long), question_ids=torch.arange(n),
                answers=answers, answer_types=["yes/no", "number", "other", "other"][:n])


@pytest.mark.parametrize("name", ["albef", "vilt"])
def test_head_output_shape_and_prediction_rows(tmp_path, name):
    _answers_file(tmp_path)
    model = _model(tmp_path, name).eval()
    batch = _batch()
    with torch.no_grad():
        logits = model(**batch, mode="tensor")
        rows = model(**batch, mode="predict")
    assert logits.shape == (4, len(model.answers)) == (4, 6)
    assert [r["question_id"] for r in rows] == [0, 1, 2, 3]
    assert all(r["pred_answer"] in model.answers for r in rows)
    assert rows[1]["answers"] == batch["answers"][1] and rows[1]["answer_type"] == "number"


def test_loss_is_scaled_bce_against_soft_scores(tmp_path):
    _answers_file(tmp_path)
    model = _model(tmp_path).eval()
    batch = _batch()
    with torch.no_grad():
        logits = model(**batch, mode="tensor")
        loss = model(**batch, mode="loss")["loss_vqa"]
    target = model.targets(batch["answers"])
    assert target[1, model.answer_index["2"]] == 1.0 and target[3, model.answer_index["green"]] == pytest.approx(2 / 3)
    expected = torch.nn.functional.binary_cross_entropy(logits.sigmoid(), target) * len(model.answers)
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-5)


def test_loss_falls_on_a_fixed_batch(tmp_path):
    _answers_file(tmp_path)
    model = _model(tmp_path).train()
    batch = _batch()
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        loss = model(**batch, mode="loss")["loss_vqa"]
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.3 * sum(losses[:5]) / 5


def test_collate_carries_answers_as_lists(tiny_benchmark):
    from harness.data.datasets import VQADataset
    from harness.data.transforms import LoadImage, Resize, ToTensor

    ds = VQADataset(data_root=str(tiny_benchmark), ann_file="vqa/v2_OpenEnded_synth_val_questions.json",
                    answers_file="vqa/v2_synth_val_annotations.json",
                    image_template="images/synth_{data_subtype}_{image_id:012d}.png",
                    pipeline=[LoadImage(), Resize(64), ToTensor()], indices=3)
    batch = vqa_collate([ds[i] for i in range(3)], tokenizer=str(tiny_benchmark / "tokenizer"))
    assert batch["images"].shape == (3, 3, 64, 64)
    assert batch["text_ids"].shape == batch["text_mask"].shape and batch["question_ids"].shape == (3,)
    assert len(batch["answers"]) == 3 and all(len(a) == 10 for a in batch["answers"])
    assert all(isinstance(t, str) and t for t in batch["answer_types"])


def test_a_head_trained_on_another_vocabulary_is_refused(tmp_path):
    _answers_file(tmp_path)
    model = _model(tmp_path)
    path = tmp_path / "finetuned.pth"
    state = model.state_dict()
    torch.save({"state_dict": state}, path)
    other = tmp_path / "other"
    other.mkdir()
    more_red = RECORDS + [_record("red", ["red"] * 10)] * 2  # the same answers, "red" now first
    (other / "annotations.json").write_text(json.dumps({"annotations": more_red}))
    clone = VQAModel(model_config("albef", "tiny", **TOKENS, **SMALL), answers_file="annotations.json",
                     data_root=str(other), min_count=1, checkpoint=str(path), require_head=True)
    assert clone.answers != model.answers and len(clone.answers) == len(model.answers)
    with pytest.raises(InputError, match="another answer vocabulary"):
        clone.init_weights()
    same = _model(tmp_path, checkpoint=str(path), require_head=True)
    same.init_weights()
    torch.testing.assert_close(same.vqa_head[0].weight, model.vqa_head[0].weight)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["albef", "copa", "vilt"])
def test_finetune_then_test_on_the_runner(tiny_benchmark, pretrained_checkpoint, tmp_path, model):
    from harness.runner import build_config, test, train

    pretrained = pretrained_checkpoint(model)
    cfg = build_config(model, "vqa", data=tiny_benchmark, work_dir=tmp_path, max_iters=3, checkpoint=pretrained)
    cfg.train_dataloader.batch_size = 8
    cfg.val_dataloader.dataset.indices = 16
    train(cfg)
    finetuned = Path((tmp_path / "last_checkpoint").read_text().strip())
    cfg = build_config(model, "vqa", data=tiny_benchmark, work_dir=tmp_path, checkpoint=finetuned, testing=True)
    cfg.test_dataloader.dataset.indices = 16
    metrics = test(cfg)
    assert {"vqa_acc", "vqa_acc_yes/no", "vqa_acc_number", "vqa_acc_other"} <= set(metrics)
    assert 0.0 <= metrics["vqa_acc"] <= 100.0


@pytest.mark.slow
def test_testing_a_pretraining_checkpoint_is_an_input_error(tiny_benchmark, pretrained_checkpoint, tmp_path):
    from harness.runner import build_config

    with pytest.raises(InputError, match="fine-tune first"):  # refused before the job writes anything
        build_config("albef", "vqa", data=tiny_benchmark, work_dir=tmp_path / "job",
                     checkpoint=pretrained_checkpoint("albef"), testing=True)
    assert not (tmp_path / "job").exists()
