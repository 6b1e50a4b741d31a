"""Grounding task unit: box conversions, generalised IoU against hand-computed values, the patch head's geometry,
the loss on a fixed batch (with and without a reducer), the collate function, and fine-tune-then-test on the
Runner."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.metrics.grounding import box_iou_xywh
from harness.tasks.grounding import (
    GroundingModel,
    PatchGroundingHead,
    box_losses,
    cxcywh_to_xywh,
    grounding_collate,
    xywh_to_cxcywh,
)
from zoo import model_config

TOKENS = dict(vocab_size=40, pad_token_id=0, cls_token_id=2, sep_token_id=3, mask_token_id=4)
SMALL = dict(vision=dict(depth=2, img_size=32), text=dict(num_layers=1), fusion_layers=1, decoder_layers=1)


def test_box_conversion_round_trip():
    sizes = torch.tensor([[64, 64], [48, 80]])
    xywh = torch.tensor([[52.0, 5.0, 12.0, 12.0], [0.0, 10.0, 40.0, 20.0]])
    norm = xywh_to_cxcywh(xywh, sizes)
    torch.testing.assert_close(norm, torch.tensor([[58 / 64, 11 / 64, 12 / 64, 12 / 64],
                                                   [20 / 80, 20 / 48, 40 / 80, 20 / 48]]))
    torch.testing.assert_close(cxcywh_to_xywh(norm, sizes), xywh)


def test_the_giou_loss_is_one_minus_hand_computed_generalised_iou():
    """torchvision's loss, fed our normalised ``[cx, cy, w, h]`` boxes, against GIoU worked out by hand."""
    def cxcywh(x1, y1, x2, y2):
        return [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]

    a = torch.tensor([cxcywh(0, 0, 2, 2), cxcywh(0, 0, 1, 1), cxcywh(0, 0, 1, 1), cxcywh(0, 0, 2, 2)])
    b = torch.tensor([cxcywh(1, 1, 3, 3), cxcywh(2, 0, 3, 1), cxcywh(0, 0, 1, 1), cxcywh(0.5, 0.5, 1.5, 1.5)])
    # overlap 1, union 7, hull 9: 1/7 - 2/9; disjoint: 0 - (3 - 2)/3; identical: 1; contained: 1/4 - 0
    giou = torch.tensor([1 / 7 - 2 / 9, -1 / 3, 1.0, 0.25])
    for i in range(4):
        torch.testing.assert_close(box_losses(a[i:i + 1], b[i:i + 1])["loss_giou"], 1 - giou[i])
    torch.testing.assert_close(box_losses(a, b)["loss_giou"], (1 - giou).mean())


def test_box_losses_are_zero_only_at_the_target():
    target = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    zero = box_losses(target, target)
    assert float(zero["loss_l1"]) == 0.0 and abs(float(zero["loss_giou"])) < 1e-5
    off = box_losses(torch.tensor([[0.6, 0.5, 0.2, 0.4]]), target)
    torch.testing.assert_close(off["loss_l1"], torch.tensor(0.1))
    # shifted by half its width: IoU 1/3, hull = union, so 1 - GIoU = 2/3
    torch.testing.assert_close(off["loss_giou"], torch.tensor(2 / 3))


def test_patch_head_places_boxes_around_their_patches_and_never_picks_a_fused_token():
    torch.manual_seed(0)
    head = PatchGroundingHead(dim=8, grid_size=(2, 3), max_offset=1.0)  # 2 rows of 3 patches
    ids = torch.tensor([[0, 4, 5, -1]])
    expected = torch.tensor([[[1 / 6, 1 / 4], [3 / 6, 3 / 4], [5 / 6, 3 / 4]]])  # (cx, cy) of patches 0, 4, 5
    torch.testing.assert_close(head.centres(ids[:, :3]), expected)
    for layer in (head.box[2], head.key):  # large outputs: offsets and scores at their limits
        torch.nn.init.normal_(layer.weight, std=10.0)
    logits, boxes = head(torch.randn(1, 8), torch.randn(1, 4, 8), ids)
    assert torch.isinf(logits[0, 3]) and logits[0, 3] < 0 and torch.isfinite(logits[0, :3]).all()
    offset = (boxes[0, :3, :2] - head.centres(ids[:, :3])[0]).abs()
    assert (offset <= torch.tensor([1 / 3, 1 / 2]) + 1e-6).all()  # within one patch (max_offset) of the centre
    assert ((boxes[..., 2:] > 0) & (boxes[..., 2:] < 1)).all()
    # the training target: the token whose patch centre is nearest the referent's centre (a fused one never)
    points = torch.tensor([[0.95, 0.8], [0.1, 0.2], [0.5, 0.5]])
    assert head.nearest_tokens(ids.expand(3, -1), points).tolist() == [2, 0, 1]


def _model(name: str = "albef") -> GroundingModel:
    torch.manual_seed(0)
    overrides = {k: v for k, v in SMALL.items() if name != "vilt" or k == "vision"}
    if name == "copa":
        overrides["reduction_layers"] = (1,)
    return GroundingModel(model_config(name, "tiny", **TOKENS, **overrides))


@pytest.mark.parametrize("name", ["albef", "copa", "vilt"])  # copa: kept patches and a fused token
def test_loss_falls_on_a_fixed_batch(name):
    model = _model(name)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(4, 3, 32, 32, generator=gen)
    text_ids = torch.randint(5, 40, (4, 6), generator=gen)
    text_ids[:, 0] = 2
    boxes = torch.tensor([[2.0, 3.0, 10.0, 8.0], [20.0, 20.0, 10.0, 10.0], [0.0, 16.0, 16.0, 16.0],
                          [8.0, 0.0, 6.0, 12.0]])
    sizes = torch.tensor([[32, 32]] * 4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    totals = []
    for _ in range(30):
        losses = model(images, text_ids, torch.ones_like(text_ids), boxes=boxes, image_sizes=sizes, mode="loss")
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        totals.append(loss.item())
    assert totals[-1] < 0.5 * totals[0]
    model.eval()
    rows = model(images, text_ids, torch.ones_like(text_ids), boxes=boxes, image_sizes=sizes,
                 ref_ids=torch.arange(4), mode="predict")
    assert [r["ref_id"] for r in rows] == [0, 1, 2, 3] and rows[1]["gt_box"] == boxes[1].tolist()
    assert sum(box_iou_xywh(r["pred_box"], r["gt_box"]) for r in rows) / 4 > 0.3


def test_collate_boxes_in_resized_pixels(tiny_benchmark):
    from harness.data.datasets import ReferringDataset

    pipeline = [dict(type="LoadImage"), dict(type="Resize", size=32), dict(type="ToTensor")]
    ds = ReferringDataset(data_root=str(tiny_benchmark), ann_file="refcoco/refs(synth).json",
                          instances_file="annotations/instances_val.json", split="val",
                          data_prefix=dict(img_path="images"), pipeline=pipeline)
    raw = ds.get_data_info(0)
    batch = grounding_collate([ds[i] for i in range(3)], tokenizer=str(tiny_benchmark / "tokenizer"))
    assert batch["images"].shape == (3, 3, 32, 32) and batch["text_ids"].shape[0] == 3
    assert batch["image_sizes"].tolist() == [[32, 32]] * 3 and batch["boxes"].shape == (3, 4)
    scale = torch.tensor([32 / raw["width"], 32 / raw["height"]] * 2)
    torch.testing.assert_close(batch["boxes"][0], torch.tensor(raw["bbox"], dtype=torch.float32) * scale)
    assert batch["ref_ids"][0] == raw["ref_id"]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["albef", "copa", "vilt"])
def test_finetune_then_test_on_the_runner(tiny_benchmark, pretrained_checkpoint, tmp_path, model):
    from harness.runner import build_config, test, train

    cfg = build_config(model, "grounding", data=tiny_benchmark, work_dir=tmp_path, max_iters=3,
                       checkpoint=pretrained_checkpoint(model))
    cfg.train_dataloader.batch_size = 8
    cfg.val_dataloader.dataset.indices = 8
    train(cfg)
    finetuned = Path((tmp_path / "last_checkpoint").read_text().strip())
    cfg = build_config(model, "grounding", data=tiny_benchmark, work_dir=tmp_path, checkpoint=finetuned,
                       testing=True)
    cfg.test_dataloader.dataset.indices = 8
    metrics = test(cfg)
    assert {"acc_iou50", "miou"} <= set(metrics)
    assert 0.0 <= metrics["acc_iou50"] <= 100.0 and 0.0 <= metrics["miou"] <= 100.0


@pytest.mark.slow
def test_testing_a_pretraining_checkpoint_is_an_input_error(tiny_benchmark, pretrained_checkpoint, tmp_path):
    from harness.errors import InputError
    from harness.runner import build_config

    with pytest.raises(InputError, match="fine-tune first"):  # refused before the job writes anything
        build_config("albef", "grounding", data=tiny_benchmark, work_dir=tmp_path / "job",
                     checkpoint=pretrained_checkpoint("albef"), testing=True)
    assert not (tmp_path / "job").exists()
