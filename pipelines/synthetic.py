"""The offline demo's inputs: a synthetic detection (or segmentation) dataset and a small random-init PaliGemma.

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
  def example(rng):
    image, objects = _image(rng, image_size, classes, grid)
    return image, [{"category": shape, "bbox": [x, y, w, h], "area": w * h} for shape, (x, y, w, h) in objects]

  return _write_coco_export(out_dir, {"train": train, "valid": valid}, classes, example, seed)


def _write_coco_export(out_dir: str, counts: dict[str, int], classes: tuple[str, ...], example, seed: int) -> str:
  """`{split}/_annotations.coco.json` + PNG images beside (Roboflow's COCO layout); `example(rng)` draws one
  image and its annotations (`category` a class name, COCO's other fields as they are)."""
  rng = np.random.default_rng(seed)
  categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(classes)]
  category_id = {c["name"]: c["id"] for c in categories}
  for split, count in counts.items():
    split_dir = os.path.join(out_dir, split)
    os.makedirs(split_dir, exist_ok=True)
    images, annotations = [], []
    for i in range(count):
      image, objects = example(rng)
      file_name = f"{split}_{i:05d}.png"
      image.save(os.path.join(split_dir, file_name))
      images.append({"id": i, "file_name": file_name, "width": image.width, "height": image.height})
      for obj in objects:
        fields = {k: v for k, v in obj.items() if k != "category"}
        annotations.append({"id": len(annotations), "image_id": i, "category_id": category_id[obj["category"]],
                            **fields, "iscrowd": 0})
    with open(os.path.join(split_dir, "_annotations.coco.json"), "w") as f:
      json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
  return out_dir


def make_random_model(out_dir: str, name: str = "demo-v2", seed: int = 0) -> str:
  """A model directory with random initial weights (model.json records `"init": "random"` and the seed);
  returns the checkpoint's path."""
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
    json.dump({**model_cfg, "name": name, "checkpoint": checkpoint, "init": "random", "seed": seed}, f, indent=2)
  return os.path.join(out_dir, checkpoint)


# ------------------------------------------------------------------------------------------ segmentation
# Instance masks for the segmentation demo and for fitting its mask codec: rectangles, ellipses and
# triangles of random aspect (a triangle's apex anywhere along its top edge), later shapes occluding
# earlier ones, so the visible masks (and their 64×64 crops, what the codec encodes) vary in shape.
SEGMENT_CLASSES = ("ellipse", "rectangle", "triangle")
_SEGMENT_COLORS = {"ellipse": (220, 60, 60), "rectangle": (60, 170, 60), "triangle": (60, 90, 220)}


def _draw_instance(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], apex: float,
                   fill) -> None:
  """`_draw`'s shapes in a box of any aspect; a triangle's apex at `apex` (0..1) along the top edge."""
  if shape == "triangle":
    x0, y0, x1, y1 = box
    draw.polygon([(x0 + apex * (x1 - x0), y0), (x1, y1), (x0, y1)], fill=fill)
  else:
    _draw(draw, {"ellipse": "circle", "rectangle": "square"}[shape], box, fill)


def segmentation_image(rng: np.random.Generator, size: int, classes: tuple[str, ...] = SEGMENT_CLASSES,
                       max_objects: int = 3, grid: int = 1) -> tuple[Image.Image, list[tuple[str, np.ndarray]]]:
  """One image (size × size, noisy background) and its objects [(class, visible mask bool [size, size])].

  1..max_objects shapes, each a quarter to two thirds of the image on a side (aspect free), drawn in turn
  so later ones occlude earlier ones; an object left with under a fifth of its area visible is dropped
  (it would be a sliver no annotator draws). Objects are listed left to right by their mask's box.
  Positions and sides are multiples of `grid` pixels (as `_image`'s: few box values, which a small random model
  learns in minutes; grid=1: any pixel)."""
  background = rng.integers(90, 170, size=3)
  pixels = np.clip(background + rng.normal(0, 12, size=(size, size, 3)), 0, 255).astype(np.uint8)
  image = Image.fromarray(pixels)
  draw = ImageDraw.Draw(image)
  objects = []  # (class, visible mask, pixels as drawn)
  for _ in range(int(rng.integers(1, max_objects + 1))):
    low, high = -(-max(size // 4, 2) // grid), max(2 * size // 3, 3) // grid  # sides in grid cells
    h, w = (grid * int(v) for v in rng.integers(low, high + 1, size=2))
    x, y = grid * int(rng.integers(0, (size - w) // grid + 1)), grid * int(rng.integers(0, (size - h) // grid + 1))
    shape, apex = classes[int(rng.integers(len(classes)))], float(rng.uniform())
    box = (x, y, x + w - 1, y + h - 1)
    color = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in _SEGMENT_COLORS.get(shape, (200, 200, 60)))
    _draw_instance(draw, shape, box, apex, color)
    canvas = Image.new("1", (size, size))
    _draw_instance(ImageDraw.Draw(canvas), shape, box, apex, 1)
    drawn = np.asarray(canvas, bool)
    objects = [(c, m & ~drawn, n) for c, m, n in objects] + [(shape, drawn, int(drawn.sum()))]
  kept = [(c, m) for c, m, n in objects if m.sum() >= 0.2 * n]
  return image, sorted(kept, key=lambda o: int(np.flatnonzero(o[1].any(axis=0))[0]))


def make_segmentation_dataset(out_dir: str, *, train: int, valid: int, image_size: int, seed: int = 0,
                              classes: tuple[str, ...] = SEGMENT_CLASSES, max_objects: int = 3, grid: int = 1) -> str:
  """Writes a Roboflow-style COCO instance-segmentation export (`{train,valid}/_annotations.coco.json`, PNG
  images beside) of `segmentation_image`s; returns `out_dir`. Each object's `segmentation` is its visible mask
  as COCO compressed RLE (occluded shapes are not polygons), `bbox` and `area` those of that mask:
  `python -m components.convert --format coco --task segment` reads it."""
  from pycocotools import mask as mask_utils

  def example(rng):
    image, objects = segmentation_image(rng, image_size, classes, max_objects, grid)
    annotations = []
    for shape, mask in objects:
      rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
      annotations.append({"category": shape, "segmentation": {"size": [int(v) for v in rle["size"]],
                                                              "counts": rle["counts"].decode()},
                          "bbox": [float(v) for v in mask_utils.toBbox(rle)], "area": int(mask.sum())})
    return image, annotations

  return _write_coco_export(out_dir, {"train": train, "valid": valid}, classes, example, seed)


def segmentation_masks64(count: int, *, seed: int = 0, image_size: int = 96) -> np.ndarray:
  """float32[count, 64, 64]: the crops the mask codec encodes (each object cropped to its box and resized
  as big_vision's op does), of the objects `segmentation_image` draws; for fitting the demo's codec."""
  from components.paligemma import segmentation  # jax-free at import of this module

  rng = np.random.default_rng(seed)
  crops = []
  while len(crops) < count:
    _, objects = segmentation_image(rng, image_size)
    crops += [segmentation.crop_resize_mask(m, segmentation.mask_box(m)) for _, m in objects]
  return np.stack(crops[:count])


def make_demo_codec(model_dir: str, *, masks: int, steps: int, seed: int = 0, image_size: int = 96,
                    name: str = "vqvae.npz") -> str:
  """Fits a small mask codec of the released layout (`fit_vqvae`) on `masks` object crops of
  `segmentation_image`'s shapes, saves it in `model_dir` and names it in that directory's model.json
  (`vqvae`), as `components.download --vqvae` leaves a model directory; returns the codec's path.

  Why fitted, not random: a random codec maps every mask to nearly the same codes and decodes masks unrelated
  to the input, so a model trained on its tokens would learn nothing about shape. The masks come from
  `seed + 1`'s shapes, not the dataset's own images (the codec is the model's, not fitted on the validation
  split). Deterministic for a seed on one machine."""
  from components.common.atomic import write_json_atomic
  from components.paligemma import fit_vqvae, save_vqvae

  codec = fit_vqvae(segmentation_masks64(masks, seed=seed + 1, image_size=image_size), seed=seed, steps=steps)
  path = os.path.join(model_dir, name)
  save_vqvae(codec, path)
  model_json = os.path.join(model_dir, "model.json")
  with open(model_json) as f:
    meta = json.load(f)
  write_json_atomic(model_json, {**meta, "vqvae": name})
  return path
