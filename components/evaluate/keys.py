"""Which image a prediction is about: stable keys rather than the output layout.

An image's key is its `source_image` (written by convert: the path relative to the *source* dataset's
root) or, in rows without one, its `image` (relative to the dataset directory). A prediction's image is
found, in this order:
1. its key is a reference key;
2. its `image` is a reference's `image` (the same dataset directory, keys absent on one side);
3. the path ends like exactly one reference key (whole `/`-separated parts, at least the file name), the
   longest such ending winning: the same pictures converted from another layout (`valid/img_032.jpg`
   from COCO, `valid/images/img_032.jpg` from YOLO) still meet. An ending several references share is
   ambiguous: the prediction is left unmatched and said so.
Prompts compare as text, except that a `detect a ; b` prompt is the same query as `detect b ; a`.
"""
from __future__ import annotations

import collections
import logging
from typing import Iterable, Sequence

log = logging.getLogger(__name__)


def image_key(row: dict) -> str:
  return str(row.get("source_image") or row["image"])


def prefix_key(prefix: str) -> str:
  """`detect b ; a` -> `detect a ; b` (the classes asked for, as a set); other prompts unchanged."""
  if not prefix.startswith("detect "):
    return prefix
  classes = {" ".join(c.split()) for c in prefix[len("detect "):].split(";")} - {""}
  return "detect " + " ; ".join(sorted(classes))


def _parts(key: str) -> tuple[str, ...]:
  return tuple(p for p in key.replace("\\", "/").split("/") if p not in ("", "."))


class ImageIndex:
  """Resolves prediction rows to the reference keys of `references` (see the module rules)."""

  def __init__(self, references: Iterable[dict]):
    self.keys: dict[str, dict] = {}  # reference key -> its first row
    self.by_image: dict[str, str] = {}
    self.by_name: dict[str, list[tuple[str, ...]]] = collections.defaultdict(list)
    for row in references:
      key = image_key(row)
      if key in self.keys:
        continue
      self.keys[key] = row
      self.by_image.setdefault(str(row["image"]), key)
      parts = _parts(key)
      if parts:
        self.by_name[parts[-1]].append(parts)
    self.by_parts = {_parts(k): k for k in self.keys}
    self.renamed: list[tuple[str, str]] = []  # (prediction key, reference key) matched by path ending
    self.ambiguous: list[tuple[str, list[str]]] = []

  def resolve(self, row: dict) -> str | None:
    """The reference key of prediction `row`'s image, or None."""
    key = image_key(row)
    if key in self.keys:
      return key
    if str(row.get("image")) in self.by_image:
      return self.by_image[str(row["image"])]
    parts = _parts(key)
    candidates = self.by_name.get(parts[-1], []) if parts else []
    if not candidates:
      return None
    depth = {c: _common_tail(c, parts) for c in candidates}
    best = max(depth.values())
    chosen = [c for c, d in depth.items() if d == best]
    if len(chosen) > 1:
      self.ambiguous.append((key, ["/".join(c) for c in chosen]))
      return None
    found = self.by_parts[chosen[0]]
    self.renamed.append((key, found))
    return found

  def log_summary(self, what: str) -> None:
    if self.renamed:
      log.info("%d %s matched a reference by the end of its path (the layouts differ), e.g. %r -> %r",
               len(self.renamed), what, *self.renamed[0])
    if self.ambiguous:
      key, candidates = self.ambiguous[0]
      log.warning("%d %s end like several references and were left unmatched, e.g. %r: %s", len(self.ambiguous),
                  what, key, ", ".join(candidates[:4]))


def _common_tail(a: Sequence[str], b: Sequence[str]) -> int:
  n = 0
  while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
    n += 1
  return n
