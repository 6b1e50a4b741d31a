"""NLVR2 task unit: two-image pair encoding, head, labels, loss, and fine-tuning + testing on the Runner."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.errors import InputError
from harness.tasks.nlvr2 import NLVR2Model, nlvr2_collate
from zoo import model_config

TOKENS = dict(vocab_size=60, pad_token_id=0, cls_token_id=1, sep_token_id=2, mask_token_id=3)
SMALL = dict(vision=dict(depth=2), text=dict(num_layers=1), fusion_layers=1, decoder_layers=0)


def _model(name: str = "albef", **kw) -> NLVR2Model:
    torch.manual_seed(0)
    backbone = model_config(name, "tiny", **TOKENS, **(SMALL if name != "vilt" else {"vision": dict(depth=2)}))
    return NLVR2Model(backbone, **kw)


def _batch(n: int = 4, length: int = 7) -> dict:
    gen = torch.Generator().manual_seed(0)
    text_ids = torch.randint(5, 60, (n, length), generator=gen)
    text_ids[:, 0] = 1
    return dict(images=torch.randn(n, 2, 3, 64, 64, generator=gen), text_ids=text_ids,
                text_mask=torch.ones(n, length, dtype=torch.long), labels=torch.tensor([1, 0, 0, 1][:n]),
                identifiers=[f"dev-{i}-0-0" for i in range(n)])


@pytest.mark.parametrize("name", ["albef", "vilt"])
def test_output_shapes_and_prediction_rows(name):
    model = _model(name).eval()
    batch = _batch()
    with torch.no_grad():
        logits = model(**batch, mode="tensor")
        rows = model(**batch, mode="predict")
    assert logits.shape == (4, 2)
    assert [r["id"] for r in rows] == batch["identifiers"]
    assert [r["label"] for r in rows] == [1, 0, 0, 1]
    assert [r["pred"] for r in rows] == logits.argmax(1).tolist()


def test_each_image_is_encoded_with_the_statement_in_order():
    model = _model().eval()
    batch = _batch(n=2)
    with torch.no_grad():
        features = model.pair_features(batch["images"], batch["text_ids"], batch["text_mask"])
        left = model.backbone.encode_pair(batch["images"][:, 0], batch["text_ids"], batch["text_mask"])
        right = model.backbone.encode_pair(batch["images"][:, 1], batch["text_ids"], batch["text_mask"])
    torch.testing.assert_close(features, torch.cat([left, right], dim=1), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"\(B, 2, 3, H, W\)"):
        model.pair_features(batch["images"][:, 0], batch["text_ids"], batch["text_mask"])


def test_loss_is_cross_entropy_against_the_labels():
    model = _model().eval()
    batch = _batch()
    with torch.no_grad():
        logits = model(**batch, mode="tensor")
        loss = model(**batch, mode="loss")["loss_nlvr2"]
        flipped = model(**dict(batch, labels=1 - batch["labels"]), mode="loss")["loss_nlvr2"]
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, batch["labels"]))
    torch.testing.assert_close(flipped, torch.nn.functional.cross_entropy(logits, 1 - batch["labels"]))


def test_loss_falls_on_a_fixed_batch():
    model = _model().train()
    batch = _batch()
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        loss = model(**batch, mode="loss")["loss_nlvr2"]
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.3 * sum(losses[:5]) / 5


def test_collate_stacks_both_images_and_reads_labels(tiny_benchmark):
    from harness.data.datasets import NLVR2Dataset
    from harness.data.transforms import LoadImage, Resize, ToTensor

    ds = NLVR2Dataset(data_root=str(tiny_benchmark), ann_file="nlvr2/val.json",
                      data_prefix=dict(img_path="nlvr2/images/val"), pipeline=[LoadImage(), Resize(64), ToTensor()],
                      indices=4)
    samples = [ds[i] for i in range(4)]
    batch = nlvr2_collate(samples, tokenizer=str(tiny_benchmark / "tokenizer"))
    assert batch["images"].shape == (4, 2, 3, 64, 64)
    assert batch["text_ids"].shape == batch["text_mask"].shape
    assert batch["labels"].tolist() == [s["label"] for s in samples] and set(batch["labels"].tolist()) <= {0, 1}
    assert batch["identifiers"] == [s["identifier"] for s in samples]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["albef", "copa", "vilt"])
def test_finetune_then_test_on_the_runner(tiny_benchmark, pretrained_checkpoint, tmp_path, model):
    from harness.runner import build_config, test, train

    pretrained = pretrained_checkpoint(model)
    cfg = build_config(model, "nlvr2", data=tiny_benchmark, work_dir=tmp_path, max_iters=3, checkpoint=pretrained)
    cfg.train_dataloader.batch_size = 8
    cfg.val_dataloader.dataset.indices = 16
    train(cfg)
    finetuned = Path((tmp_path / "last_checkpoint").read_text().strip())
    cfg = build_config(model, "nlvr2", data=tiny_benchmark, work_dir=tmp_path, checkpoint=finetuned, testing=True)
    cfg.test_dataloader.dataset.indices = 16
    metrics = test(cfg)
    assert set(metrics) >= {"acc"} and 0.0 <= metrics["acc"] <= 100.0


@pytest.mark.slow
def test_finetuning_trains_the_pretrained_vit_at_a_tenth_of_the_rate(tiny_benchmark, pretrained_checkpoint, tmp_path):
    from mmengine.optim import build_optim_wrapper

    from harness.runner import build_config

    pretrained = pretrained_checkpoint("copa")
    cfg = build_config("copa", "nlvr2", data=tiny_benchmark, work_dir=tmp_path, checkpoint=pretrained)
    model = NLVR2Model(**{k: v for k, v in cfg.model.items() if k != "type"})
    names = {id(p): n for n, p in model.named_parameters()}
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    rates = {names[id(p)]: g["lr"] for g in wrapper.optimizer.param_groups for p in g["params"]}
    base = cfg.optim_wrapper.optimizer.lr
    vit = [n for n in rates if n.startswith("backbone.vision.") and ".reducers." not in n]
    assert len(vit) > 50 and all(rates[n] == pytest.approx(base / 10) for n in vit)
    head = [n for n in rates if n.startswith("nlvr2_head.")]
    assert head and all(rates[n] == pytest.approx(base * 10) for n in head)
    rest = [n for n in rates if n not in vit and n not in head]
    assert any(".reducers." in n for n in rest) and any(n.startswith("backbone.text_encoder.") for n in rest)
    assert all(rates[n] == pytest.approx(base) for n in rest)


@pytest.mark.slow
def test_testing_a_pretraining_checkpoint_is_an_input_error(tiny_benchmark, pretrained_checkpoint, tmp_path):
    from harness.runner import build_config

    with pytest.raises(InputError, match="fine-tune first"):  # refused before the job writes anything
        build_config("albef", "nlvr2", data=tiny_benchmark, work_dir=tmp_path / "job",
                     checkpoint=pretrained_checkpoint("albef"), testing=True)
    assert not (tmp_path / "job").exists()
