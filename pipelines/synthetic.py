"""The offline demo's inputs: a synthetic detection dataset and a small random-init PaliGemma.

The dataset is a COCO export in Roboflow's layout (`{train,valid}/_annotations.coco.json`, images beside),
the same thing a user uploads, so the demo runs the real convert step. Each image holds 1-2 shapes
(circle, square, triangle) at random positions, a quarter to half the image wide, on a noisy background.

The model is a model directory as `components.download` leaves it for a local source: `<name>.npz`,
`model.json`, `tokenizer.model` (a real sentencepiece model trained by
`components.paligemma.train_small_tokenizer`).
"""
from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle")
# One hue per class (jittered): the tiny demo model learns where things are, not fine shape cues first.
_COLORS = {"circle": (220, 60, 60), "square": (60, 170, 60), "triangle": (60, 90, 220)}


def _draw(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], color) -> None:
  x0, y0, x1, y1 = box
  if shape == "circle":
    draw.ellipse(box, fill=color)
  elif shape == "square":
    draw.rectangle(box, fill=color)
  else:
    draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=color)


def _image(rng: np.random.Generator, size: int, classes: tuple[str, ...], grid: int):
  """One image and its objects [(class, (x, y, w, h))], objects not overlapping much.

  Positions and sizes are random multiples of `grid` pixels: box coordinates then use a small set of the
  1024 location tokens, which a randomly initialised model learns in minutes (grid=1: any pixel)."""
  background = rng.integers(90, 170, size=3)
  pixels = np.clip(background + rng.normal(0, 12, size=(size, size, 3)), 0, 255).astype(np.uint8)
  image = Image.fromarray(pixels)
  draw = ImageDraw.Draw(image)
  objects, taken = [], np.zeros((size, size), bool)
  for _ in range(int(rng.integers(1, 3))):
    for _attempt in range(20):
      side = grid * int(rng.integers(-(-size // 4 // grid), size // 2 // grid + 1))  # ceil(size/4) .. size/2
      x, y = (grid * int(v) for v in rng.integers(0, (size - side) // grid + 1, size=2))
      if taken[y:y + side, x:x + side].mean() < 0.1:
        break
    taken[y:y + side, x:x + side] = True
    shape = classes[int(rng.integers(len(classes)))]
    color = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in _COLORS[shape])
    _draw(draw, shape, (x, y, x + side - 1, y + side - 1), color)
    objects.append((shape, (x, y, side, side)))
  # Left to right: a fixed reading order makes the target sequence easier to learn for the tiny model.
  return image, sorted(objects, key=lambda o: o[1][0])


def make_detection_dataset(out_dir: str, *, train: int, valid: int, image_size: int, seed: int = 0,
                           classes: tuple[str, ...] = CLASSES, grid: int = 1) -> str:
  """Writes a Roboflow-style COCO export with `train` and `valid` images; returns `out_dir`."""
  rng = np.random.default_rng(seed)
  categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(classes)]
  category_id = {c["name"]: c["id"] for c in categories}
  for split, count in (("train", train), ("valid", valid)):
    split_dir = os.path.join(out_dir, split)
    os.makedirs(split_dir, exist_ok=True)
    images, annotations = [], []
    for i in range(count):
      image, objects = _image(rng, image_size, classes, grid)
      file_name = f"{split}_{i:05d}.png"
      image.save(os.path.join(split_dir, file_name))
      images.append({"id": i, "file_name": file_name, "width": image_size, "height": image_size})
      for shape, (x, y, w, h) in objects:
        annotations.append({"id": len(annotations), "image_id": i, "category_id": category_id[shape],
                            "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
    with open(os.path.join(split_dir, "_annotations.coco.json"), "w") as f:
      json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
  return out_dir


def make_random_model(out_dir: str, name: str = "demo-v2", seed: int = 0) -> str:
  """A model directory with random initial weights; returns the checkpoint's path."""
  import jax
  import jax.numpy as jnp

  from components import paligemma

  os.makedirs(out_dir, exist_ok=True)
  model_cfg = paligemma.configs.model_config(name)
  size = paligemma.configs.image_size(model_cfg)
  model = paligemma.Model(**model_cfg)
  text = jnp.zeros((1, 8), jnp.int32)
  params = jax.jit(model.init)(jax.random.PRNGKey(seed), jnp.zeros((1, size, size, 3)), text, text)["params"]
  checkpoint = f"{name}.npz"
  paligemma.save(jax.device_get(params), os.path.join(out_dir, checkpoint))
  paligemma.train_small_tokenizer(os.path.join(out_dir, "tokenizer.model"),
                                  vocab_size=model_cfg["llm"]["vocab_size"])
  with open(os.path.join(out_dir, "model.json"), "w") as f:
    json.dump({**model_cfg, "name": name, "checkpoint": checkpoint}, f, indent=2)
  return os.path.join(out_dir, checkpoint)
