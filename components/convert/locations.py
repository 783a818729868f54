"""PaliGemma's detection text: boxes <-> `<locY1><locX1><locY2><locX2> label ; ...`, and the task prompts.

Rounding (big_vision's, PALIGEMMA.md §4): a coordinate is normalised by the image height (y) or width
(x), binned as `round(v * 1023)` clipped to [0, 1023], and decoded as `bin / 1023`. A round trip
therefore moves a coordinate by at most half a bin (0.5 / 1023 of the image side) plus float error.
Evaluation decodes model output with `loc_text_to_boxes`, so encoding and decoding share one rule.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from components.common.locations import NUM_BINS, to_bins  # noqa: F401 (the one rule; re-exported)

_LOC_OBJECT_RE = re.compile(r"<loc(\d{4})><loc(\d{4})><loc(\d{4})><loc(\d{4})>\s*([^;<]*)")
OBJECT_SEPARATOR = " ; "


def check_class_name(name: str) -> str:
  """A class name must survive the round trip through `detect a ; b` and the loc text; else ValueError."""
  if not isinstance(name, str) or not name.strip():
    raise ValueError(f"class name {name!r} is empty; give every class a name")
  if ";" in name or "<" in name or "\n" in name:
    raise ValueError(
        f"class name {name!r} contains ';', '<' or a newline, which PaliGemma's detection text uses as "
        "separators; rename the class (for example with --classes) before converting")
  return name.strip()


def detect_prefix(classes: Sequence[str]) -> str:
  return "detect " + OBJECT_SEPARATOR.join(classes)


def task_prefix(task: str, question: str | None = None) -> str:
  """The prompt for a non-detection task (detection needs the class list: `detect_prefix`)."""
  if task == "caption":
    return "caption en"
  if task == "ocr":
    return "ocr"
  if task == "vqa":
    return f"answer en {question}"
  raise ValueError(f"no fixed prompt for task {task!r}")


def boxes_to_loc_text(boxes_xyxy: np.ndarray | Sequence, labels: Sequence[str], width: float, height: float) -> str:
  """Pixel boxes `[N, 4]` as (x1, y1, x2, y2) and their labels -> `<locY1><locX1><locY2><locX2> label ; ...`."""
  boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
  if len(boxes) != len(labels):
    raise ValueError(f"{len(boxes)} boxes but {len(labels)} labels")
  scale = np.array([width, height, width, height], np.float64)
  bins = to_bins(boxes / scale)  # [N, 4] as x1, y1, x2, y2
  parts = []
  for (x1, y1, x2, y2), label in zip(bins, labels, strict=True):
    parts.append(f"<loc{y1:04d}><loc{x1:04d}><loc{y2:04d}><loc{x2:04d}> {label}")
  return OBJECT_SEPARATOR.join(parts)


def loc_text_to_boxes(text: str, width: float = 1.0, height: float = 1.0) -> tuple[np.ndarray, list[str]]:
  """Inverse of `boxes_to_loc_text`: `(boxes [N, 4] as pixel x1, y1, x2, y2, labels)`.

  With the default width = height = 1 the boxes are normalised. Malformed pieces of model output (a
  partial object, stray text) are skipped, so evaluation can score whatever parsed.
  """
  boxes, labels = [], []
  for match in _LOC_OBJECT_RE.finditer(text):
    y1, x1, y2, x2 = (int(match.group(i)) / (NUM_BINS - 1) for i in range(1, 5))
    boxes.append((x1 * width, y1 * height, x2 * width, y2 * height))
    labels.append(match.group(5).strip())
  return np.asarray(boxes, np.float64).reshape(-1, 4), labels
