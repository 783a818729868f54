"""`--task segment`: one `segment <class>` row per image and class, the suffix from the mask codec.

Readers give one row per image with all its instance masks (`Row.masks`); `rows_by_class` checks the class
names, keeps `--classes`, and makes one row per class present, its masks in source order. The workers
rasterise each mask in the written image's pixels (`masks.py`) and crop it to its tight box at 64x64
(`components.paligemma.segmentation.crop_resize_mask`); the parent encodes the crops with the codec as the
results arrive (one process holds the codec and jax) and writes the suffix, every instance of the class
`<loc>`x4 `<seg>`x16 `class`, joined by ` ; ` (what `masks_to_suffix` writes, with the crop done in the
workers). Rows passed through with `<seg>` text already (paligemma-jsonl) are left as they are.
"""
from __future__ import annotations

import dataclasses
import logging

from components.convert.locations import check_class_name
from components.convert.rows import Issue, Source

log = logging.getLogger("components.convert")
PROMPT = "segment "
MODEL_JSON = "model.json"


class SegmentError(ValueError):
  """The segmentation settings cannot work (no codec, a bad class name)."""


def rows_by_class(source: Source, classes: tuple[str, ...] | None) -> list[str]:
  """Splits each image row with masks into one row per class present (`--classes`: only those, in that order;
  masks of other classes dropped as repairs). Returns the class list. An image left with no mask is rejected.
  (Labels are checked before: `core._check_labels`.)"""
  used = [m.label for r in source.rows for m in r.masks or ()]
  if classes:
    order = [check_class_name(c) for c in classes]
  else:
    order = list(dict.fromkeys([check_class_name(c) for c in source.classes or ()] + sorted(set(used))))
  allowed = set(order)
  rows = []
  for row in source.rows:
    if row.masks is None:  # an answer passed through
      rows.append(row)
      continue
    others = [m for m in row.masks if m.label not in allowed]
    repairs = list(row.repairs) + [f"mask {m.where} ({m.label!r}) dropped: not in --classes" for m in others]
    present = [c for c in order if any(m.label == c for m in row.masks)]
    if not present:
      why = "its masks are all of classes not in --classes" if others else "it has no instance mask"
      source.issues.append(Issue(row.file, row.row, f"nothing to segment: {why} ("
                                 + "; ".join(repairs or ["a `segment <class>` row needs a mask of the class"]) + ")",
                                 image=row.image))
      continue
    for i, label in enumerate(present):
      rows.append(dataclasses.replace(row, prefix=PROMPT + label, masks=[m for m in row.masks if m.label == label],
                                      repairs=repairs if i == 0 else []))  # the image's repairs once
  source.rows = rows
  return order


def codec_path(vqvae: str | None) -> str:
  """`--vqvae`: a codec .npz, or a model directory (or finetune workdir) whose model.json names one (`vqvae`, as
  download writes it): `components.common.checkpoints.find_vqvae`, as evaluate finds it."""
  if not vqvae:
    raise SegmentError("--task segment needs the mask codec that writes the <seg> tokens: give --vqvae PATH (a "
                       "VQ-VAE .npz such as vae-oid.npz, or a model directory downloaded with --vqvae)")
  if vqvae.rstrip("/").endswith(".npz"):
    return vqvae
  from components.common.checkpoints import find_vqvae, read_model_json, resolve_checkpoint

  try:
    resolved = resolve_checkpoint(vqvae)
    path = find_vqvae(resolved, read_model_json(resolved))
  except (OSError, ValueError) as e:
    raise SegmentError(f"--vqvae {vqvae}: {e}") from None
  if path is None:
    raise SegmentError(f"--vqvae {vqvae}: its {MODEL_JSON} names no mask codec (`vqvae`); download the model with "
                       "--vqvae, or give the codec .npz itself")
  return path


def load_codec(vqvae: str | None) -> dict:
  from components.paligemma import CheckpointError, load_vqvae

  path = codec_path(vqvae)
  try:
    codec = load_vqvae(path)
  except (CheckpointError, OSError) as e:
    raise SegmentError(f"--vqvae {vqvae}: {e}") from None
  log.info("mask codec: %s", path)
  return codec


def encode_suffixes(result, codec) -> None:
  """The suffix of each row of a worker result that has mask crops (its crops dropped: memory stays bounded)."""
  from components.paligemma import segmentation, vqvae

  for row_result in result.rows:
    if row_result.crops is None:
      continue
    codes = vqvae.encode_masks(codec, row_result.crops)
    row_result.suffix = segmentation.OBJECT_SEPARATOR.join(
        segmentation.object_text(m["box"], c, m["label"]) for m, c in zip(row_result.masks, codes, strict=True))
    row_result.crops = None
