"""big_vision / PaliGemma JSONL: one `{"image", "prefix", "suffix"}` object per line.

Layouts found (a path to a single `.jsonl` file works too):
- Roboflow's "PaliGemma" export: `dataset/_annotations.{train,valid,test}.jsonl`, images beside them;
- big_vision style: `{train,valid,test}.jsonl` in the root;
- Roboflow maestro: `{train,valid,test}/annotations.jsonl`, images in each split folder;
- otherwise every `*.jsonl` in the root, without a split.
Image paths are relative to the JSONL file's folder. For detection the suffix's loc text is parsed
back into boxes, so the images can be cleaned like any other source's. For segmentation (Roboflow's
PaliGemma export of an instance-segmentation project, `segment <class>` -> `<loc>`x4 `<seg>`x16 `class ; ...`)
the answer is validated (`components.paligemma.parse_segments`: every object 4 <loc> then 16 <seg> tokens)
and passed through unchanged; a row with an unreadable object is rejected naming it.
"""
from __future__ import annotations

import glob
import json
import os

from components.convert.locations import loc_text_to_boxes
from components.convert.readers.common import join_rel, rel, split_dirs, split_from_filename
from components.convert.rows import Issue, Obj, Row, Source

SEGMENT_PROMPT = "segment "


def _find_files(path: str) -> tuple[str, list[tuple[str, str | None]]]:
  """-> (root, [(jsonl path, split or None)])."""
  if os.path.isfile(path):
    return os.path.dirname(os.path.abspath(path)), [(path, split_from_filename(path))]
  if os.path.isdir(os.path.join(path, "dataset")) and glob.glob(os.path.join(path, "dataset", "*.jsonl")):
    path = os.path.join(path, "dataset")  # Roboflow puts its export one level down
  top = sorted(glob.glob(os.path.join(path, "*.jsonl")))
  if top:
    splits = [(f, split_from_filename(f)) for f in top]
    if any(s for _, s in splits):
      return path, [(f, s) for f, s in splits if s]  # stray non-split files beside split files are ignored
    return path, splits
  nested = split_dirs(path, "annotations.jsonl")
  if nested:
    return path, [(os.path.join(path, d, "annotations.jsonl"), s) for s, d in nested.items()]
  raise FileNotFoundError(
      f"no .jsonl files in {path}; expected {{train,valid,test}}.jsonl, Roboflow's dataset/_annotations.*.jsonl "
      "or {train,valid,test}/annotations.jsonl")


def read(path: str, task: str, **_) -> Source:
  root, files = _find_files(path)
  rows, issues, declared_classes = [], [], []
  for jsonl, split in files:
    name, base = rel(jsonl, root), rel(os.path.dirname(os.path.abspath(jsonl)), root)
    with open(jsonl, encoding="utf-8") as f:
      for number, line in enumerate(f, start=1):
        if not line.strip():
          continue
        try:
          example = json.loads(line)
        except json.JSONDecodeError as e:
          issues.append(Issue(name, number, f"not valid JSON ({e.msg}); fix or delete the line"))
          continue
        missing = [k for k in ("image", "prefix", "suffix") if not isinstance(example, dict) or k not in example]
        if missing:
          issues.append(Issue(name, number, f"missing key(s) {missing}; every line needs image, prefix and suffix"))
          continue
        row = Row(image=join_rel(base, str(example["image"])), file=name, row=number, split=split,
                  prefix=str(example["prefix"]), suffix=str(example["suffix"]))
        if task == "segment":
          if not _check_segments(row, issues):
            continue
          declared_classes.append(row.prefix[len(SEGMENT_PROMPT):].strip())
        if task == "detect":
          if not _parse_objects(row, issues):
            continue
          if row.prefix.startswith("detect "):
            declared_classes += [c.strip() for c in row.prefix[len("detect "):].split(";")]
        rows.append(row)
  classes = list(dict.fromkeys(c for c in declared_classes if c)) or None
  return Source(root=root, rows=rows, classes=classes, issues=issues)


def _check_segments(row: Row, issues: list[Issue]) -> bool:
  from components.paligemma.segmentation import parse_segments  # text only: no codec, no jax work

  if not row.prefix.startswith(SEGMENT_PROMPT) or not row.prefix[len(SEGMENT_PROMPT):].strip():
    issues.append(Issue(row.file, row.row, f"prefix {row.prefix[:60]!r} is not 'segment <class>'; fix it or convert "
                                           "with another --task", image=row.image))
    return False
  malformed = parse_segments(row.suffix).malformed
  if malformed:
    issues.append(Issue(row.file, row.row, f"suffix has {len(malformed)} unreadable object(s): " + "; ".join(
        f"{m.segment[:60]!r} {m.reason}" for m in malformed[:3]) + "; fix or delete the row", image=row.image))
    return False
  row.text_has_locations = True
  return True


def _parse_objects(row: Row, issues: list[Issue]) -> bool:
  boxes, labels = loc_text_to_boxes(row.suffix)
  if row.suffix.strip() and not labels:
    issues.append(Issue(row.file, row.row, f"suffix {row.suffix[:60]!r} has no <locY1><locX1><locY2><locX2> label "
                                           "objects; fix it or convert with another --task", image=row.image))
    return False
  row.objects = [Obj(label, tuple(float(v) for v in box), normalized=True) for box, label in zip(boxes, labels, strict=True)]
  row.suffix = None
  return True
