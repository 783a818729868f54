"""Helpers every reader shares: split folders, image listings, paths relative to the dataset root."""
from __future__ import annotations

import json
import os
import posixpath

from components.convert.rows import Issue, Row, Source, canonical_split

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".jfif", ".ppm", ".pgm")


def split_dirs(root: str, inner: str = "") -> dict[str, str]:
  """Split folders directly under `root` (`train/`, `valid/`, `val/`, ...) -> {canonical split: folder name}.

  With `inner`, a folder counts only if it holds `inner` (a file or folder name).
  """
  found = {}
  for name in sorted(os.listdir(root)):
    split = canonical_split(name)
    if split and os.path.isdir(os.path.join(root, name)) and (not inner or os.path.exists(os.path.join(root, name, inner))):
      if split in found:
        raise ValueError(f"{root} has two folders for the {split} split ({found[split]}, {name}); keep one")
      found[split] = name
  return found


def split_from_filename(name: str) -> str | None:
  """`train.jsonl`, `_annotations.valid.jsonl`, `instances_val2017.json`, `test.csv` -> the split, if any."""
  stem = os.path.basename(name).lower()
  for token in stem.replace("-", ".").replace("_", ".").split("."):
    split = canonical_split(token.rstrip("0123456789"))
    if split:
      return split
  return None


def list_images(directory: str) -> list[str]:
  """Image files under `directory` (recursively), sorted, as paths relative to it with '/'."""
  found = []
  for dirpath, dirnames, filenames in os.walk(directory):
    dirnames.sort()
    for name in sorted(filenames):
      if name.lower().endswith(IMAGE_EXTENSIONS):
        found.append(os.path.relpath(os.path.join(dirpath, name), directory).replace(os.sep, "/"))
  return found


def join_rel(*parts: str) -> str:
  """Joins '/'-paths without normalising, so a `..` inside a row stays visible to the escape check."""
  return posixpath.join(*[p for p in parts if p not in ("", ".")])


def rel(path: str, root: str) -> str:
  return os.path.relpath(path, root).replace(os.sep, "/")


def account_duplicates(source: Source, task: str) -> None:
  """Duplicates are reported, never merged silently (every source row ends up kept or in `issues`):

  - a box that repeats an earlier box of its row (same class and coordinates) is dropped, noted as a repair;
  - a row that repeats an earlier row of its split (same image, prompt and labels) is rejected as a
    duplicate of it;
  - in detection, rows of one split that give one image (and prompt) different boxes are all rejected: no
    one of them can be trusted to hold all of the image's boxes (two annotation files, or two image
    entries, for one file).
  Splits given by the source are left as they are, even where they share an image.
  """
  for row in source.rows:
    if row.objects:
      seen, kept = {}, []
      for i, obj in enumerate(row.objects, start=1):
        key = (obj.label, tuple(obj.box), obj.normalized)
        if key in seen:
          row.repairs.append(f"box {i} ({obj.label!r}) dropped: a copy of box {seen[key]} (same class and coordinates)")
          continue
        seen[key] = i
        kept.append(obj)
      row.objects = kept
    if row.masks:
      seen, kept = {}, []
      for mask in row.masks:
        key = _mask_key(mask)
        if key in seen:
          row.repairs.append(f"mask {mask.where} ({mask.label!r}) dropped: a copy of mask {seen[key]} (same class "
                             "and shape)")
          continue
        seen[key] = mask.where
        kept.append(mask)
      row.masks = kept
  first, unique = {}, []
  for row in source.rows:
    key = (row.split, row.image, row.prefix, row.suffix, _boxes(row), _masks(row))
    if key in first:
      other = first[key]
      source.issues.append(Issue(row.file, row.row, f"duplicate of {other.file}, row {other.row} (same image and "
                                                    "labels); dropped", image=row.image))
      continue
    first[key] = row
    unique.append(row)
  if task in ("detect", "segment"):
    by_image = {}
    for row in unique:
      by_image.setdefault((row.split, row.image, row.prefix), []).append(row)
    conflicting = {id(r) for rows in by_image.values() if len(rows) > 1 for r in rows}
    for (_, image, _), rows in by_image.items():
      if len(rows) > 1:
        where = "; ".join(f"{r.file}, row {r.row}" for r in rows)
        source.issues += [Issue(r.file, r.row, f"image {image} has {len(rows)} annotation rows with different "
                                               f"{'masks' if task == 'segment' else 'boxes'} ({where}); keep one row "
                                               f"with all its {'masks' if task == 'segment' else 'boxes'}", image=image) for r in rows]
    unique = [r for r in unique if id(r) not in conflicting]
  source.rows = unique


def _boxes(row: Row):
  return None if row.objects is None else tuple(sorted((o.label, tuple(o.box), o.normalized) for o in row.objects))


def _mask_key(mask) -> tuple:
  return (mask.label, mask.kind, mask.normalized, json.dumps(mask.data, sort_keys=True, default=str))


def _masks(row: Row):
  return None if row.masks is None else tuple(sorted(_mask_key(m) for m in row.masks))
