"""What a reader hands to the converter: one `Row` per example, plus `Issue`s for what it could not use.

Readers do no image work; they say where the image is, where the row came from (file and row, for the
report), the split if the source has one, and the task's text (or, for detection, the objects).
"""
from __future__ import annotations

import dataclasses

SPLITS = ("train", "valid", "test")
SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "valid": "valid", "val": "valid", "validation": "valid", "dev": "valid",
    "test": "test", "testing": "test",
}


def canonical_split(name: str) -> str | None:
  """`validation` -> `valid`, ...; None for a name that is not a split."""
  return SPLIT_ALIASES.get(str(name).strip().lower())


@dataclasses.dataclass
class Obj:
  label: str
  box: tuple[float, float, float, float]  # x1, y1, x2, y2
  normalized: bool = False  # True: box in [0, 1] units of the image (YOLO, loc text); False: pixels


@dataclasses.dataclass
class Mask:
  """One instance mask as the source gives it (segmentation); `where` names it in the report."""
  label: str
  kind: str  # "polygons": [[x, y, x, y, ...], ...]; "rle": a COCO RLE dict; "png": a file relative to the root
  data: object
  where: str
  normalized: bool = False  # polygons in [0, 1] units of the image (YOLO-seg); False: pixels


@dataclasses.dataclass
class Row:
  image: str  # image file, relative to the dataset root ('/'-separated)
  file: str  # the annotation file the row came from (relative to the root), for the report
  # Where in that file: the 1-based line (JSONL, CSV), the image id (COCO), the index (HF), or 0 when
  # the file is the row (a YOLO label file, a VOC .xml; box problems then name their line/object).
  row: int | str
  split: str | None = None  # canonical split when the source has one
  prefix: str | None = None  # None for detection: built from the class list
  suffix: str | None = None  # None for detection: built from `objects` after image hygiene
  objects: list[Obj] | None = None  # detection only
  masks: list[Mask] | None = None  # segmentation from masks (the suffix is built from them after image hygiene)
  # The suffix holds positions in the image (a <loc>/<seg> answer passed through): such a row cannot follow
  # an EXIF rotation of its image.
  text_has_locations: bool = False
  declared_size: tuple[int, int] | None = None  # (width, height) the annotation file says the image has
  source_id: int | str | None = None  # the source's own id of the image (COCO's image id), for scoring
  repairs: list[str] = dataclasses.field(default_factory=list)  # fixes made while reading


@dataclasses.dataclass
class Issue:
  """A rejected or repaired row, as the report lists it."""
  file: str
  row: int | str
  reason: str
  action: str = "rejected"  # or "repaired"
  image: str | None = None

  def to_json(self) -> dict:
    return {"file": self.file, "row": self.row, "image": self.image, "action": self.action, "reason": self.reason}

  def __str__(self) -> str:
    where = f"{self.file}, row {self.row}" + (f" (image {self.image})" if self.image else "")
    return f"{where}: {self.reason}"


class RowError(Exception):
  """A row that cannot be used; the message says why and what to do."""


@dataclasses.dataclass
class Source:
  """A reader's result: the rows, the class list the source declares (detection), and the issues."""
  root: str  # local directory all `Row.image` paths are relative to
  rows: list[Row]
  classes: list[str] | None = None
  issues: list[Issue] = dataclasses.field(default_factory=list)
  categories: dict[int, str] | None = None  # the source's category ids (COCO), for scoring detector outputs
