"""Helpers every reader shares: split folders, image listings, paths relative to the dataset root."""
from __future__ import annotations

import os
import posixpath

from components.convert.rows import canonical_split

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
