"""The per-image work that runs in parallel: decode, orient, normalise, downscale, fix boxes, encode, write.

One task is one image and every row that uses it (a COCO image with five captions is decoded once).
Tasks and results are plain picklable data so a process pool can run them.
"""
from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from components.convert import images, masks as masks_lib
from components.convert.locations import boxes_to_loc_text
from components.convert.rows import Issue, Row, RowError


@dataclasses.dataclass(frozen=True)
class ImageOptions:
  max_pixels: int = images.DEFAULT_MAX_PIXELS
  max_side: int | None = None  # longer side of the written image; None keeps the size
  image_format: str = "jpeg"  # or "png"


@dataclasses.dataclass
class Task:
  root: str  # local dataset root
  image: str  # image path relative to the root
  out_image: str  # where to write it, relative to the output directory
  rows: list[Row]


@dataclasses.dataclass
class RowResult:
  row: Row
  suffix: str | None = None  # detection: the loc text; other tasks keep `row.suffix`
  objects: list[dict] | None = None  # detection: [{"label", "box": [x1, y1, x2, y2]}] in written pixels
  # segmentation from masks: [{"label", "box": [y1, x1, y2, x2] normalised, "rle"}] in written pixels, and
  # float32[N, 64, 64] what the codec encodes of each (the parent encodes them: `segment.encode_suffix`)
  masks: list[dict] | None = None
  crops: np.ndarray | None = None
  repairs: list[str] = dataclasses.field(default_factory=list)
  rejected: str | None = None  # the row cannot be used (its image can): why


@dataclasses.dataclass
class TaskResult:
  task: Task
  width: int = 0
  height: int = 0
  source_size: tuple[int, int] = (0, 0)  # (width, height) of the source image as displayed (EXIF applied)
  rows: list[RowResult] = dataclasses.field(default_factory=list)
  error: Issue | None = None  # the image itself was unusable: every row of the task is rejected
  image_notes: list[str] = dataclasses.field(default_factory=list)


def run_task(task: Task, staging_dir: str, options: ImageOptions) -> TaskResult:
  """Writes `staging_dir/task.out_image`; never raises for bad data (the result carries the error)."""
  try:
    path = images.resolve_inside(task.root, task.image)
    image, orientation, stored_size, notes = images.load_rgb(path, options.max_pixels, task.image, options.max_side)
  except Exception as e:  # noqa: BLE001 - one odd file (a Pillow decoder bug) must not stop the others
    reason = str(e) if isinstance(e, RowError) else (
        f"image file {task.image} could not be decoded ({type(e).__name__}: {e}); re-export it or remove the row")
    first = task.rows[0]
    return TaskResult(task, error=Issue(first.file, first.row, reason, image=task.image))
  oriented_size = images.oriented(stored_size, orientation)
  image = images.resize_to(image, images.target_size(oriented_size, options.max_side))
  data = images.encode(image, options.image_format)
  out_path = os.path.join(staging_dir, task.out_image)
  os.makedirs(os.path.dirname(out_path), exist_ok=True)
  with open(out_path, "wb") as f:
    f.write(data)
  result = TaskResult(task, width=image.width, height=image.height, source_size=oriented_size, image_notes=notes)
  for row in task.rows:
    row_result = RowResult(row, repairs=list(row.repairs))
    geometry = _Geometry(stored_size, oriented_size, image.size, orientation, row.declared_size)
    if row.text_has_locations and orientation != 1:
      row_result.rejected = (f"the image has EXIF orientation {orientation} (shown rotated or flipped) and the answer "
                             "holds positions (<loc>/<seg>) that cannot follow it; export the image upright")
    if row.masks is not None:
      _fix_masks(task, row, geometry, row_result)
    if row.objects is not None:
      row_result.objects = _fix_boxes(row, geometry, row_result.repairs)
      row_result.suffix = boxes_to_loc_text(
          [o["box"] for o in row_result.objects], [o["label"] for o in row_result.objects], image.width, image.height)
    result.rows.append(row_result)
  return result


def _fix_masks(task: Task, row: Row, geometry: "_Geometry", result: RowResult) -> None:
  """Each mask in written pixels, its tight box and its 64x64 crop; unusable masks dropped and reported,
  a row left with none rejected."""
  # (numpy functions; imported here so that the workers of other tasks do not import the model library)
  from components.paligemma.segmentation import crop_resize_mask, mask_box

  kept, crops, dropped = [], [], []
  for m in row.masks:
    try:
      mask = masks_lib.to_written(m, task.root, geometry)
    except (masks_lib.MaskError, RowError) as e:
      dropped.append(f"mask {m.where} ({m.label!r}) dropped: {e}")
      continue
    box = mask_box(mask)
    crops.append(crop_resize_mask(mask, box))
    kept.append({"label": m.label, "box": [float(v) for v in box], "rle": masks_lib.rle(mask)})
  result.repairs += dropped
  if not kept:
    result.rejected = "no usable mask: " + "; ".join(dropped)
    return
  result.masks, result.crops = kept, np.stack(crops)


@dataclasses.dataclass
class _Geometry:
  stored: tuple[int, int]  # (w, h) of the pixel grid in the file
  oriented: tuple[int, int]  # after EXIF orientation
  written: tuple[int, int]  # after downscaling
  orientation: int
  declared: tuple[int, int] | None  # what the annotation file says

  def boxes_already_oriented(self) -> bool:
    """An annotation tool that showed the rotated image declares the rotated size."""
    return (self.orientation != 1 and self.declared is not None
            and tuple(self.declared) == self.oriented and tuple(self.declared) != self.stored)


def _fix_boxes(row: Row, g: _Geometry, repairs: list[str]) -> list[dict]:
  """Source boxes -> written-image pixels: orient, scale, clip; degenerate boxes dropped (and reported)."""
  oriented = g.boxes_already_oriented()
  scale_x = g.written[0] / g.oriented[0]
  scale_y = g.written[1] / g.oriented[1]
  out_w, out_h = g.written
  fixed = []
  if g.declared and tuple(g.declared) not in (g.stored, g.oriented):
    # Rescaling would guess; the pixels of the real file are the ground truth, so say what we assumed.
    repairs.append(f"annotation says the image is {g.declared[0]}x{g.declared[1]} but the file is "
                   f"{g.stored[0]}x{g.stored[1]}; boxes taken as pixels of the file")
  for i, obj in enumerate(row.objects):
    what = f"box {i + 1} ({obj.label!r}, {tuple(round(v, 2) for v in obj.box)})"
    if not all(math.isfinite(v) for v in obj.box):
      repairs.append(f"{what} dropped: not a finite number")
      continue
    if obj.box[2] <= obj.box[0] or obj.box[3] <= obj.box[1]:
      repairs.append(f"{what} dropped: zero or negative width or height")
      continue
    frame = g.oriented if oriented else g.stored
    box = obj.box
    if obj.normalized:
      box = (box[0] * frame[0], box[1] * frame[1], box[2] * frame[0], box[3] * frame[1])
    if not oriented:
      box = images.orient_box(box, g.orientation, *g.stored)
    x1, y1, x2, y2 = box[0] * scale_x, box[1] * scale_y, box[2] * scale_x, box[3] * scale_y
    clipped = (min(max(x1, 0.0), out_w), min(max(y1, 0.0), out_h), min(max(x2, 0.0), out_w), min(max(y2, 0.0), out_h))
    if clipped[2] - clipped[0] <= 0 or clipped[3] - clipped[1] <= 0:
      repairs.append(f"{what} dropped: entirely outside the {out_w}x{out_h} image")
      continue
    if any(abs(a - b) > 1e-6 * max(out_w, out_h) for a, b in zip(clipped, (x1, y1, x2, y2), strict=True)):
      repairs.append(f"{what} clipped to the image")
    fixed.append({"label": obj.label, "box": [round(float(v), 3) for v in clipped]})
  return fixed
