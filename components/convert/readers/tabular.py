"""CSV with a header: `image,caption` (caption), `image,question,answer` (vqa), `image,text` (ocr),
or `image,prefix,suffix` for any task; an optional `split` column keeps a split per row.

The input is a `.csv` file or a folder of them (`train.csv`, `valid.csv`, ... give the split). Image
paths are relative to the CSV's folder.
"""
from __future__ import annotations

import csv
import glob
import os

from components.convert.locations import task_prefix
from components.convert.readers.common import join_rel, rel, split_from_filename
from components.convert.rows import Issue, Row, Source, canonical_split

IMAGE_COLUMNS = ("image", "image_path", "file_name", "filename", "path")
ANSWER_COLUMNS = {"caption": ("caption", "text"), "ocr": ("text", "ocr", "transcription"), "vqa": ("answer",)}


def _files(path: str) -> tuple[str, list[tuple[str, str | None]]]:
  if os.path.isfile(path):
    return os.path.dirname(os.path.abspath(path)), [(path, split_from_filename(path))]
  files = sorted(glob.glob(os.path.join(path, "*.csv")))
  if not files:
    raise FileNotFoundError(f"no .csv file in {path}")
  return path, [(f, split_from_filename(f) if len(files) > 1 else None) for f in files]


def _pick(columns: list[str], options: tuple[str, ...], what: str, name: str) -> str:
  for option in options:
    if option in columns:
      return option
  raise ValueError(f"{name} has no {what} column (looked for {', '.join(options)}; found {', '.join(columns)}); "
                   "rename the column")


def read(path: str, task: str, **_) -> Source:
  if task == "detect":
    raise ValueError("CSV input holds text, not boxes: use --task caption, vqa or ocr (or a box format for detect)")
  if task == "segment":
    raise ValueError("CSV input holds text, not masks: --task segment reads coco, yolo, mask-png or paligemma-jsonl")
  root, files = _files(path)
  rows, issues = [], []
  for csv_path, file_split in files:
    name, base = rel(csv_path, root), rel(os.path.dirname(os.path.abspath(csv_path)), root)
    with open(csv_path, encoding="utf-8-sig", newline="") as f:
      reader = csv.DictReader(f)
      columns = [c.strip() for c in reader.fieldnames or []]
      reader.fieldnames = columns
      image_col = _pick(columns, IMAGE_COLUMNS, "image", name)
      generic = "prefix" in columns and "suffix" in columns
      answer_col = None if generic else _pick(columns, ANSWER_COLUMNS[task], f"{task} answer", name)
      if task == "vqa" and not generic:
        _pick(columns, ("question",), "question", name)
      for record in reader:
        number = reader.line_num
        values = {k: (v or "").strip() for k, v in record.items() if k is not None}
        split = file_split
        if values.get("split"):
          split = canonical_split(values["split"])
          if split is None:
            issues.append(Issue(name, number, f"split {values['split']!r} is not train, valid or test; fix the cell"))
            continue
        if generic:
          prefix, suffix = values["prefix"], values["suffix"]
        else:
          prefix, suffix = task_prefix(task, values.get("question")), values[answer_col]
        empty = [c for c, v in ((image_col, values.get(image_col)), ("answer", suffix), ("question", values.get(
            "question", "-") if task == "vqa" and not generic else "-")) if not v]
        if empty:
          issues.append(Issue(name, number, f"empty {', '.join(empty)}; fill the cell(s) or delete the row",
                              image=values.get(image_col) or None))
          continue
        rows.append(Row(join_rel(base, values[image_col]), name, number, split, prefix=prefix, suffix=suffix))
  return Source(root=root, rows=rows, issues=issues)
