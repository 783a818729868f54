"""Instance masks (segmentation) -> bool masks in the written image's pixels, or why a mask cannot be used.

Polygons (COCO pixels, YOLO-seg normalised) move like boxes (EXIF orientation, then the downscale) and are
rasterised at the written size by pycocotools. RLE and mask PNGs are decoded on the source's pixel grid (the
stored one, or the oriented one when the mask has that size or the annotation declares it), oriented as the
image is, and resized bilinearly (foreground where the resized 0/255 mask is >= 128). Unusable: a polygon of
fewer than 3 points, values that are not finite, an RLE or PNG whose size is not the image's, a mask without
a pixel, a polygon entirely outside the image.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from components.convert import images
from components.convert.rows import Mask

# Pillow's own transposes for each EXIF orientation, as `ImageOps.exif_transpose` applies them to the image.
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


class MaskError(ValueError):
  """A mask that cannot be used; the message says why."""


def polygon_problem(polygon) -> str | None:
  """Why a flat [x, y, x, y, ...] list is not a polygon (checked by the readers), or None."""
  if not isinstance(polygon, (list, tuple)) or len(polygon) % 2:
    return "a polygon must be a flat list of x, y pairs"
  if len(polygon) < 6:
    return f"a polygon with {len(polygon) // 2} point(s) (needs at least 3)"
  try:
    finite = all(math.isfinite(float(v)) for v in polygon)
  except (TypeError, ValueError):
    return "a polygon coordinate is not a number"
  return None if finite else "a polygon coordinate is not a finite number"


def to_written(mask: Mask, root: str, geometry) -> np.ndarray:
  """bool [height, width] of the written image (`geometry`: the worker's `_Geometry`); raises MaskError."""
  if mask.kind == "polygons":
    return _polygons(mask, geometry)
  if mask.kind == "rle":
    grid = _rle(mask.data)
  elif mask.kind == "png":
    grid = _png(images.resolve_inside(root, mask.data))
  else:
    raise ValueError(f"unknown mask kind {mask.kind!r}")
  return _nonempty(_grid_to_written(grid, geometry, "RLE" if mask.kind == "rle" else "mask PNG"))


def rle(mask: np.ndarray) -> dict:
  """bool [H, W] -> COCO RLE {"size": [H, W], "counts": str} (compressed, JSON-ready)."""
  encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
  return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def _nonempty(mask: np.ndarray) -> np.ndarray:
  if not mask.any():
    raise MaskError("empty: no pixel of the image is in it")
  return mask


def _polygons(mask: Mask, g) -> np.ndarray:
  oriented = g.boxes_already_oriented()
  frame = g.oriented if oriented else g.stored
  scale_x, scale_y = g.written[0] / g.oriented[0], g.written[1] / g.oriented[1]
  width, height = g.written
  polygons = []
  for polygon in mask.data:
    xs, ys = np.asarray(polygon[0::2], np.float64), np.asarray(polygon[1::2], np.float64)
    if mask.normalized:
      xs, ys = xs * frame[0], ys * frame[1]
    if not oriented:
      xs, ys = images.orient_points(xs, ys, g.orientation, *g.stored)
    polygons.append(np.stack([xs * scale_x, ys * scale_y], axis=1).ravel())
  points = np.concatenate(polygons).reshape(-1, 2)
  if points[:, 0].max() <= 0 or points[:, 0].min() >= width or points[:, 1].max() <= 0 or points[:, 1].min() >= height:
    raise MaskError(f"entirely outside the {width}x{height} image")
  encoded = mask_utils.merge(mask_utils.frPyObjects([p.tolist() for p in polygons], height, width))
  return _nonempty(mask_utils.decode(encoded).astype(bool))


def _rle(data) -> np.ndarray:
  try:
    height, width = (int(v) for v in data["size"])
    counts = data["counts"]
  except (KeyError, TypeError, ValueError):
    raise MaskError("an RLE needs 'size' [height, width] and 'counts'") from None
  if isinstance(counts, list):
    if sum(int(c) for c in counts) != height * width:
      raise MaskError(f"RLE counts cover {sum(int(c) for c in counts)} pixels, its size {height}x{width} has "
                      f"{height * width}")
    encoded = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
  elif isinstance(counts, (str, bytes)):
    encoded = {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
  else:
    raise MaskError("RLE 'counts' must be a list or a string")
  try:
    return mask_utils.decode(encoded).astype(bool)
  except Exception as e:  # noqa: BLE001 - pycocotools raises bare errors for corrupt strings
    raise MaskError(f"RLE cannot be decoded ({e})") from None


def _png(path: str) -> np.ndarray:
  """Foreground: non-zero pixels (any channel); with an alpha channel that is not all opaque, the alpha."""
  try:
    with Image.open(path) as opened:
      opened.load()
      image = opened
  except OSError as e:
    raise MaskError(f"mask PNG cannot be read ({e})") from None
  if image.mode in ("RGBA", "LA", "PA") and image.getchannel("A").getextrema()[0] < 255:
    return np.asarray(image.getchannel("A")) > 0
  values = np.asarray(image if image.mode in ("1", "L", "P", "I", "I;16", "F") else image.convert("RGB"))
  return values.reshape(values.shape[0], values.shape[1], -1).max(axis=2) > 0


def _grid_to_written(grid: np.ndarray, g, what: str) -> np.ndarray:
  height, width = grid.shape
  if (width, height) == tuple(g.oriented) and (g.boxes_already_oriented() or tuple(g.oriented) != tuple(g.stored)):
    image = Image.fromarray(grid.astype(np.uint8) * np.uint8(255))  # drawn on the upright image
  elif (width, height) == tuple(g.stored):
    image = Image.fromarray(grid.astype(np.uint8) * np.uint8(255))
    if g.orientation in _TRANSPOSE:
      image = image.transpose(_TRANSPOSE[g.orientation])
  else:
    raise MaskError(f"{what} is {width}x{height}, the image is {g.stored[0]}x{g.stored[1]}")
  if image.size != tuple(g.written):
    image = image.resize(tuple(g.written), Image.BILINEAR)
  return np.asarray(image) >= 128
