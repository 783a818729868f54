"""PaliGemma's segmentation text: full-resolution masks <-> `<locY1><locX1><locY2><locX2><seg…>×16 label`.

Writing (big_vision's `refcoco_mask2str` preprocessing op, big_vision/pp/proj/paligemma/segmentation.py):
the mask is cropped to its box (corners `round(side * coordinate)` in float32, as TF does), resized to
64×64 with antialiased bilinear interpolation (TF's `tf.image.resize(..., antialias=True)`, a triangle
kernel widened by the downscale factor, weights renormalised at the edges), scaled to [0, 1] and encoded
into 16 codes; the box becomes four `<loc>` tokens by the detection rule (`components.common.locations`;
in float32, as the op bins its float32 box).

Reading (big_vision's segmentation evaluator, big_vision/evaluators/proj/paligemma/transfers/segmentation.py):
each object's 16 codes are decoded to a 64×64 map, resized with PIL's bilinear filter to the box in pixels
(corners `int(side * bin / 1023)`, truncated as big_vision does) and pasted into an all-False mask of the
image's size; > 0 is foreground.

An answer is objects joined by ` ; ` (as PaliGemma's mix models answer `segment <class>`), each
`<loc>`×4 `<seg>`×16 followed by an optional label. A segment that is not exactly that (a missing or
partial `<seg>` run, a box with y2 <= y1 or x2 <= x1, which big_vision calls invalid) is reported with the
reason and yields no object; the good segments of the same answer are kept.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping, Sequence

import numpy as np

from components.common.locations import from_bins, to_bins
from components.paligemma import vqvae as vqvae_lib
from components.paligemma.tokenizer import NUM_LOC, NUM_SEG, loc_piece, seg_piece

OBJECT_SEPARATOR = " ; "
_LOC = re.compile(r"<loc(\d+)>")
_SEG = re.compile(r"<seg(\d+)>")
_TOKEN = re.compile(r"\s*<(loc|seg)(\d+)>")
_SIZE = vqvae_lib.MASK_SIZE


@dataclasses.dataclass(frozen=True)
class SegObject:
  """One object of a segmentation answer.

  `box` is normalised (y1, x1, y2, x2) = bins / 1023; `codes` int32[16] its `<seg>` indices; `mask` the
  decoded mask pasted at full resolution, bool [H, W] (None from `parse_segments`, which does not decode);
  `label` "" when the answer names none; `start`/`end` the character span of the segment in the answer
  (to find the generated tokens that spell it, e.g. for a confidence).
  """
  box: tuple[float, float, float, float]
  codes: np.ndarray
  label: str
  start: int
  end: int
  mask: np.ndarray | None = None

  @property
  def loc_bins(self) -> tuple[int, int, int, int]:
    return tuple(int(v) for v in to_bins(self.box))


@dataclasses.dataclass(frozen=True)
class MalformedSegment:
  """A piece of an answer that is not an object: the text and why."""
  segment: str
  reason: str


@dataclasses.dataclass(frozen=True)
class ParsedSegmentation:
  """An answer read back: its objects in order, and the pieces that were not objects (with reasons)."""
  objects: list[SegObject]
  malformed: list[MalformedSegment]


# ---------------------------------------------------------------------------------------- masks -> text

def mask_box(mask) -> np.ndarray:
  """The tight box of a mask's foreground, normalised [y1, x1, y2, x2] (pixel edges / side; float64)."""
  mask = _as_uint8_mask(mask)
  rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
  if not len(rows):
    raise ValueError("the mask is empty: it has no box")
  height, width = mask.shape
  return np.array([rows[0] / height, cols[0] / width, (rows[-1] + 1) / height, (cols[-1] + 1) / width])


def crop_resize_mask(mask, box) -> np.ndarray:
  """Full-resolution mask [H, W] (bool, or uint8 0..255 as big_vision reads them) and normalised box
  [y1, x1, y2, x2] -> float32[64, 64] in [0, 1]: what the encoder sees (big_vision's op, ÷255)."""
  mask = _as_uint8_mask(mask)
  height, width = mask.shape
  box32 = np.asarray(box, np.float32).reshape(4)
  y1, x1, y2, x2 = np.round(np.float32([height, width, height, width]) * box32).astype(np.int64)
  crop = mask[max(y1, 0):y2, max(x1, 0):x2]
  if crop.size == 0:
    raise ValueError(f"box {[float(v) for v in box32]} covers no pixel of the {height}×{width} mask "
                     f"(rows {y1}:{y2}, columns {x1}:{x2})")
  rows, cols = _resize_weights(crop.shape[0], _SIZE), _resize_weights(crop.shape[1], _SIZE)
  return ((rows @ crop.astype(np.float32) @ cols.T) / np.float32(255.0)).astype(np.float32)


def _resize_weights(in_size: int, out_size: int) -> np.ndarray:
  """float32[out, in]: TF's antialiased bilinear weights (`tf.image.resize(..., antialias=True)`).

  Output pixel i is centred at input coordinate s = (i + 0.5) / scale, scale = out / in; input pixel j
  (centre j + 0.5) gets the triangle kernel max(0, 1 - |j + 0.5 - s| / k), k = max(1 / scale, 1) (widened
  only when downscaling), and each row is normalised to sum 1. float32 throughout, in TF's order of
  operations, so the values agree with TF's to an ulp or two. Computed with numpy rather than jax so that
  crops of any size cost no compilation (a dataset has about as many crop sizes as objects)."""
  one = np.float32(1.0)
  inv_scale = one / np.float32(out_size / in_size)
  one_over_kernel_scale = one / max(inv_scale, one)
  sample = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * inv_scale
  position = np.arange(in_size, dtype=np.float32)[None, :] + np.float32(0.5) - sample[:, None]
  weights = np.maximum(np.float32(0.0), one - np.abs(position * one_over_kernel_scale))
  return weights * (one / weights.sum(axis=1, keepdims=True, dtype=np.float32))


def _as_uint8_mask(mask) -> np.ndarray:
  mask = np.asarray(mask)
  if mask.ndim == 3 and mask.shape[-1] in (1, 3):  # big_vision's [H, W, 3]: the first channel is read
    mask = mask[..., 0]
  if mask.ndim != 2:
    raise ValueError(f"a mask must be [H, W] (bool or uint8 0..255), got shape {mask.shape}")
  if mask.dtype == bool:
    return mask.astype(np.uint8) * np.uint8(255)
  if mask.dtype != np.uint8:
    raise ValueError(f"a mask must be bool or uint8 0..255 (as big_vision reads them), got {mask.dtype}")
  if mask.max(initial=0) == 1:
    raise ValueError("this uint8 mask holds only 0 and 1; pass it as bool (uint8 masks are 0..255, as "
                     "big_vision reads them)")
  return mask


def object_text(box, codes, label: str | None = None) -> str:
  """`<locY1><locX1><locY2><locX2><seg…>×16[ label]` for a normalised box and 16 codes.

  The box is binned as a float32 box, as big_vision's op bins its float32 `objects/bbox`."""
  bins = to_bins(np.asarray(box, np.float32).reshape(4))  # big_vision's boxes are float32
  codes = np.asarray(codes).reshape(-1)
  if len(codes) != vqvae_lib.NUM_TOKENS:
    raise ValueError(f"{len(codes)} codes; a mask is {vqvae_lib.NUM_TOKENS} <seg> tokens")
  text = "".join(loc_piece(int(b)) for b in bins) + "".join(seg_piece(int(c)) for c in codes)
  if label:
    if ";" in label or "<" in label or "\n" in label:
      raise ValueError(f"label {label!r} contains ';', '<' or a newline, which the segmentation text uses "
                       "as separators; rename the class")
    text += " " + label.strip()
  return text


def masks_to_suffix(masks: Sequence, boxes: Sequence, vqvae: Mapping[str, Any],
                    labels: Sequence[str | None] | None = None) -> str:
  """Several objects (full-resolution masks and their normalised boxes) -> one answer, ` ; `-joined.

  All masks go through the codec in one batch (what convert wants for an image's objects).
  """
  if len(masks) != len(boxes):
    raise ValueError(f"{len(masks)} masks but {len(boxes)} boxes")
  labels = [None] * len(masks) if labels is None else list(labels)
  if len(labels) != len(masks):
    raise ValueError(f"{len(masks)} masks but {len(labels)} labels")
  if not len(masks):
    return ""
  codes = vqvae_lib.encode_masks(vqvae, np.stack([crop_resize_mask(m, b) for m, b in zip(masks, boxes)]))
  return OBJECT_SEPARATOR.join(object_text(b, c, l) for b, c, l in zip(boxes, codes, labels))


def mask_to_suffix(mask, box, vqvae: Mapping[str, Any], label: str | None = None) -> str:
  """A full-resolution mask [H, W] and its normalised box [y1, x1, y2, x2] -> `<loc>`×4 `<seg>`×16
  (then ` label` when given): the suffix big_vision's `refcoco_mask2str` writes."""
  return masks_to_suffix([mask], [box], vqvae, [label])


# ---------------------------------------------------------------------------------------- text -> masks

def _segments(text: str):
  """(start, end, stripped segment) for each `;`-separated piece of the text."""
  start = 0
  for piece in text.split(";"):
    lead = len(piece) - len(piece.lstrip())
    stripped = piece.strip()
    yield start + lead, start + lead + len(stripped), stripped
    start += len(piece) + 1


def _parse_segment(segment: str) -> tuple[list[int], list[int], str] | str:
  """(loc bins, seg codes, label) of one segment, or the reason it is not an object."""
  pos, tokens = 0, []  # the run of <loc>/<seg> tokens that opens the segment
  while (m := _TOKEN.match(segment, pos)) is not None:
    tokens.append((m.group(1), m.group(2)))
    pos = m.end()
  kinds = [kind for kind, _ in tokens]
  n_loc = next((i for i, kind in enumerate(kinds) if kind != "loc"), len(kinds))
  if n_loc != 4:
    return f"opens with {n_loc} <loc> tokens, needs 4 then {vqvae_lib.NUM_TOKENS} <seg> tokens"
  n_seg = next((i for i, kind in enumerate(kinds[4:]) if kind != "seg"), len(kinds) - 4)
  if n_seg != vqvae_lib.NUM_TOKENS:
    return f"has {n_seg} <seg> tokens after the box, needs {vqvae_lib.NUM_TOKENS}"
  label = segment[pos:].strip()
  if len(tokens) > 4 + n_seg or _LOC.search(label) or _SEG.search(label):
    return f"stray <loc>/<seg> tokens after the {vqvae_lib.NUM_TOKENS} <seg> tokens"
  (bins, bin_digits), (codes, code_digits) = (
      ([int(v) for _, v in part], {len(v) for _, v in part}) for part in (tokens[:4], tokens[4:]))
  if bin_digits != {4} or max(bins) >= NUM_LOC:
    return f"a <loc> token outside <loc0000>..<loc{NUM_LOC - 1:04d}>"
  if code_digits != {3} or max(codes) >= NUM_SEG:
    return f"a <seg> token outside <seg000>..<seg{NUM_SEG - 1:03d}>"
  if bins[2] <= bins[0] or bins[3] <= bins[1]:
    return "empty or inverted box (needs y2 > y1 and x2 > x1)"
  return bins, codes, " ".join(label.split())


def parse_segments(text: str) -> ParsedSegmentation:
  """Objects (box, codes, label, span; no mask) and malformed segments of an answer, without decoding."""
  objects, malformed = [], []
  for start, end, segment in _segments(text):
    if not segment:
      continue  # an empty answer, a trailing ';'
    parsed = _parse_segment(segment)
    if isinstance(parsed, str):
      malformed.append(MalformedSegment(segment, parsed))
      continue
    bins, codes, label = parsed
    objects.append(SegObject(tuple(float(v) for v in from_bins(bins)), np.asarray(codes, np.int32), label,
                             start, end))
  return ParsedSegmentation(objects, malformed)


def paste_mask(mask64, box, height: int, width: int) -> np.ndarray:
  """A decoded float [64, 64] map (> 0 foreground) and a normalised box -> bool[height, width], as
  big_vision's evaluator pastes it: PIL bilinear resize to the box's pixels `int(side * coordinate)`.
  A box that truncates to no pixel gives an all-False mask (big_vision scores it IoU 0)."""
  from PIL import Image  # here, not at the top: the model library imports without Pillow (benchmarks/gpu_suite.py)

  y1, x1, y2, x2 = (int(v) for v in np.asarray(box, np.float64) * [height, width, height, width])
  out = np.zeros((height, width), bool)
  y1, x1 = max(y1, 0), max(x1, 0)
  y2, x2 = min(y2, height), min(x2, width)
  if y2 <= y1 or x2 <= x1:
    return out
  resized = Image.fromarray(np.asarray(mask64, np.float32)).resize((x2 - x1, y2 - y1), Image.BILINEAR)
  out[y1:y2, x1:x2] = np.asarray(resized) > 0.0
  return out


def suffix_to_masks(text: str, height: int, width: int, vqvae: Mapping[str, Any]) -> ParsedSegmentation:
  """An answer -> its objects with full-resolution bool masks [height, width], and its malformed segments.

  All objects are decoded in one codec call. Never raises on a malformed answer: bad segments are listed.
  """
  parsed = parse_segments(text)
  if not parsed.objects:
    return parsed
  masks64 = vqvae_lib.decode_masks(vqvae, np.stack([o.codes for o in parsed.objects]))
  objects = [dataclasses.replace(o, mask=paste_mask(m, o.box, height, width))
             for o, m in zip(parsed.objects, masks64)]
  return ParsedSegmentation(objects, parsed.malformed)

