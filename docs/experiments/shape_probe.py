"""Linear probe of a tiny ViT's final patch tokens: how well do they say each object's shape and colour?

Each object's patch tokens are averaged with the weights vision pre-training pools them with (the share of each
patch its box covers); a logistic regression (L-BFGS) is fitted on the objects of the first 1,500 train images
and scored on every val object. Takes a vision encoder file (``vision_encoder.pth``) or a VLP checkpoint.

    python docs/experiments/shape_probe.py [--data data/tiny] FILE [FILE ...]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F

from copa.patch_labels import box_patch_overlap
from copa.vision import VisionTransformer
from harness.data.transforms import ToTensor, read_rgb
from zoo import SCALES


def load_vit(path: str) -> VisionTransformer:
    state = torch.load(path, map_location="cpu", weights_only=False)
    if "state_dict" in state:  # a VLP checkpoint: its ViT without the reducers
        state = {k[len("vision."):]: v for k, v in state["state_dict"].items()
                 if k.startswith("vision.") and not k.startswith("vision.reducers.")}
    vit = VisionTransformer(**SCALES["tiny"]["vision"])
    vit.load_state_dict(state, strict=True)
    return vit.eval()


@torch.no_grad()
def object_features(vit: VisionTransformer, root: str, split: str, limit: int | None = None):
    inst = json.load(open(f"{root}/annotations/instances_{split}.json"))
    names = {c["id"]: c["name"] for c in inst["categories"]}
    shapes, colours = sorted(names.values()), sorted({a["colour"] for a in inst["annotations"]})
    files = {i["id"]: i["file_name"] for i in inst["images"]}
    objects: dict[int, list] = {}
    for a in inst["annotations"]:
        objects.setdefault(a["image_id"], []).append(a)
    ids = sorted(objects)[:limit]
    to_tensor, patch = ToTensor(), vit.patch_embed.patch_size[0]
    feats, shape_y, colour_y = [], [], []
    for start in range(0, len(ids), 250):
        chunk = ids[start:start + 250]
        images = torch.stack([to_tensor({"img": read_rgb(f"{root}/images/{files[i]}")})["img"] for i in chunk])
        tokens = vit(images, None).tokens[:, 1:]
        for row, image_id in zip(tokens, chunk, strict=True):
            for a in objects[image_id]:
                w = box_patch_overlap(a["bbox"], tuple(images.shape[-2:]), patch)
                feats.append(torch.from_numpy(w / w.sum()).float() @ row)
                shape_y.append(shapes.index(names[a["category_id"]]))
                colour_y.append(colours.index(a["colour"]))
    return torch.stack(feats), torch.tensor(shape_y), torch.tensor(colour_y)


def probe_accuracy(x_train, y_train, x_val, y_val, steps: int = 300) -> float:
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
    weight = torch.zeros(x_train.shape[1], int(y_train.max()) + 1, requires_grad=True)
    bias = torch.zeros(weight.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x_train @ weight + bias, y_train) + 1e-3 * (weight ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return 100.0 * ((x_val @ weight + bias).argmax(1) == y_val).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--data", default="data/tiny")
    args = parser.parse_args()
    for path in args.files:
        vit = load_vit(path)
        x_train, s_train, c_train = object_features(vit, args.data, "train", limit=1500)
        x_val, s_val, c_val = object_features(vit, args.data, "val")
        majority = 100.0 * np.bincount(s_val.numpy()).max() / len(s_val)
        print(f"{path}: shape {probe_accuracy(x_train, s_train, x_val, s_val):.1f}%  "
              f"colour {probe_accuracy(x_train, c_train, x_val, c_val):.1f}%  "
              f"({len(s_train)} train / {len(s_val)} val objects; majority shape {majority:.1f}%)")


if __name__ == "__main__":
    main()
