"""A Hugging Face dataset: a folder written by `save_to_disk`, or a hub dataset name (`owner/name`) resolved
through the hub cache.

The image column is the first `Image` feature (or a column named `image`). Text columns by task:
caption `caption`/`text`/`captions` (a list gives one row per caption), vqa `question` + `answer`/
`answers`, ocr `text`/`ocr`; any task accepts `prefix` + `suffix`. Detection reads an `objects` column
(`bbox` + `category`/`label`) with boxes as COCO [x, y, w, h] pixels (`bbox_format="xyxy"` for corners)
and class names from its `ClassLabel` feature. Images are written once into a scratch folder so the
workers can read files like for every other format.
"""
from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING

from components.common.extras import require
from components.convert.locations import task_prefix
from components.convert.rows import Issue, Obj, Row, RowError, Source, canonical_split

if TYPE_CHECKING:
  import datasets

TEXT_COLUMNS = {"caption": ("caption", "captions", "text"), "ocr": ("text", "ocr", "transcription"),
                "vqa": ("answer", "answers")}


def _datasets():
  """`datasets`, imported where used: it costs seconds and only hf input needs it (the hf-data extra)."""
  return require("datasets", extra="hf-data", needed_by="the Hugging Face dataset reader (--format hf)")


def _load(path: str, scratch: str) -> datasets.DatasetDict:
  datasets = _datasets()
  if os.path.isdir(path):
    loaded = datasets.load_from_disk(path)
  else:
    # A hub name: huggingface_hub resolves it through its cache (offline runs with HF_HUB_OFFLINE=1 use
    # the cached snapshot), then `datasets` reads the snapshot's data files (parquet, json, csv, ...).
    from huggingface_hub import snapshot_download
    snapshot = snapshot_download(path, repo_type="dataset")
    loaded = datasets.load_dataset(snapshot, cache_dir=os.path.join(scratch, "cache"))
  return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"": loaded})


def _image_column(ds: datasets.Dataset) -> str:
  datasets = _datasets()
  for name, feature in ds.features.items():
    if isinstance(feature, datasets.Image):
      return name
  if "image" in ds.features:
    return "image"
  raise ValueError(f"the dataset has no Image column (columns: {', '.join(ds.features)}); add one named 'image'")


def _first(columns, options):
  return next((c for c in options if c in columns), None)


def read(path: str, task: str, scratch: str, bbox_format: str = "xywh", **_) -> Source:
  if task == "segment":
    raise ValueError("--format hf reads no instance masks: --task segment reads coco, yolo, mask-png or "
                     "paligemma-jsonl")
  datasets = _datasets()
  dataset_dict = _load(path, scratch)
  rows, issues, classes = [], [], None
  written = {}  # (split, sha256 of the image bytes) -> the file written for them
  for split_name, ds in dataset_dict.items():
    split = canonical_split(split_name) if split_name else None
    if split_name and split is None:
      raise ValueError(f"split {split_name!r} of {path} is not train, valid or test (or an alias); rename it")
    image_col = _image_column(ds)
    ds = ds.cast_column(image_col, datasets.Image(decode=False))  # bytes as stored: our workers decode
    text_col = None if {"prefix", "suffix"} <= set(ds.features) else _first(ds.features, TEXT_COLUMNS.get(task, ()))
    if task != "detect" and text_col is None and not {"prefix", "suffix"} <= set(ds.features):
      raise ValueError(f"{path}[{split_name}] has no column for {task} text (looked for "
                       f"{', '.join(TEXT_COLUMNS[task])} or prefix+suffix; found {', '.join(ds.features)})")
    if task == "detect":
      classes = classes or _class_names(ds)
    file = f"{path}[{split_name}]" if split_name else path
    for index, example in enumerate(ds):
      image = _write_image(example[image_col], scratch, split_name or "all", index, written)
      if image is None:
        issues.append(Issue(file, index, "the image cell is empty; fill it or drop the row"))
        continue
      try:
        texts = _texts(example, task, text_col, classes, bbox_format)
      except RowError as e:
        issues.append(Issue(file, index, str(e), image=image))
        continue
      for prefix, suffix, objects in texts:
        rows.append(Row(image, file, index, split, prefix=prefix, suffix=suffix, objects=objects))
  return Source(root=scratch, rows=rows, classes=classes, issues=issues)


def _write_image(cell, scratch: str, split: str, index: int, written: dict) -> str | None:
  """The image's file in `scratch`; rows of one split with the same image bytes share one file, so that they
  are rows of one image (a repeated row is then reported as a duplicate, not converted twice)."""
  if not cell or not (cell.get("bytes") or cell.get("path")):
    return None
  data = cell.get("bytes")
  if data is None:
    with open(cell["path"], "rb") as f:
      data = f.read()
  digest = (split, hashlib.sha256(data).hexdigest())
  if digest in written:
    return written[digest]
  ext = os.path.splitext(cell.get("path") or "")[1].lower() or ".img"
  relpath = f"{split or 'all'}/{index:06d}{ext}"
  os.makedirs(os.path.join(scratch, split or "all"), exist_ok=True)
  with open(os.path.join(scratch, relpath), "wb") as f:
    f.write(data)
  written[digest] = relpath
  return relpath


def _class_names(ds: datasets.Dataset) -> list[str] | None:
  datasets = _datasets()
  objects = ds.features.get("objects")
  if objects is None:
    raise ValueError(f"detection needs an 'objects' column with bbox and category (found {', '.join(ds.features)})")
  inner = objects.feature if isinstance(objects, (datasets.Sequence, datasets.List)) else objects
  for key in ("category", "label", "categories", "labels"):
    feature = inner.get(key) if isinstance(inner, dict) else None
    feature = getattr(feature, "feature", feature)
    if isinstance(feature, datasets.ClassLabel):
      return list(feature.names)
  return None


def _texts(example: dict, task: str, text_col: str | None, classes, bbox_format: str):
  """-> [(prefix, suffix, objects)] for one example (several for a list of captions)."""
  if task == "detect":
    objects = example["objects"]
    if isinstance(objects, list):  # a list of {bbox, category} dicts rather than a dict of lists
      objects = {k: [o[k] for o in objects] for k in (objects[0] if objects else {"bbox": 0, "category": 0})}
    labels = next((objects[k] for k in ("category", "label", "categories", "labels") if k in objects), [])
    boxes = objects.get("bbox", [])
    if len(boxes) != len(labels):
      raise RowError(f"objects has {len(boxes)} bbox but {len(labels)} labels; give every box one label")
    result = []
    for box, label in zip(boxes, labels, strict=True):
      name = classes[label] if classes and isinstance(label, int) else str(label)
      try:
        x1, y1, a, b = (float(v) for v in box)
      except (TypeError, ValueError):
        raise RowError(f"bbox {box!r} is not 4 numbers") from None
      result.append(Obj(name, (x1, y1, a, b) if bbox_format == "xyxy" else (x1, y1, x1 + a, y1 + b)))
    return [(None, None, result)]
  if text_col is None:
    return [(str(example["prefix"]), str(example["suffix"]), None)]
  answers = example[text_col]
  answers = [str(a) for a in answers] if isinstance(answers, list) else [str(answers)]
  if task == "vqa":
    return [(task_prefix("vqa", str(example["question"])), answers[0], None)]
  return [(task_prefix(task), a, None) for a in answers]
