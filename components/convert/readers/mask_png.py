"""Per-instance mask PNGs (`--format mask-png`, `--task segment`): one binary PNG per object, named by class.

    [{train,valid,test}/]images/<path>.<ext>            the images (any folder depth under images/)
    [{train,valid,test}/]masks/<path>/<class>_<n>.png   one PNG per instance, the image's size (or <class>.png)

`<path>` is the image's path under `images/` without its extension; `<class>` the file name without a
trailing `_<number>` (`traffic_light_2.png` is class `traffic_light`). Foreground: non-zero pixels (any
channel), or the alpha channel where it is not all opaque. This is the layout per-instance exporters write
(e.g. Label Studio's brush export, one PNG per region, or a COCO/YOLO-seg set rasterised per object),
reduced to its essentials: the folder pairs the masks with their image, the name gives the class.
An image without a mask folder has nothing to segment (rejected); a mask folder without an image is reported.
"""
from __future__ import annotations

import os
import re

from components.convert.readers.common import join_rel, list_images, split_dirs
from components.convert.rows import Issue, Mask, Row, Source

_INSTANCE = re.compile(r"^(?P<label>.+?)(?:_(?P<n>\d+))?$")


def _pairs(root: str) -> list[tuple[str, str, str | None]]:
  """-> [(images folder, masks folder, split)] relative to the root."""
  nested = split_dirs(root, "images")
  if nested:
    return [(f"{d}/images", f"{d}/masks", s) for s, d in nested.items()]
  if os.path.isdir(os.path.join(root, "images")):
    return [("images", "masks", None)]
  raise FileNotFoundError(f"no images/ folder in {root} (nor train/images/, ...); --format mask-png expects "
                          "images/<path>.jpg and masks/<path>/<class>_<n>.png")


def read(path: str, task: str, **_) -> Source:
  if task != "segment":
    raise ValueError(f"mask PNGs are instance masks: use --task segment, not {task!r}")
  root = path
  rows, issues = [], []
  for images_dir, masks_dir, split in _pairs(root):
    stems = set()
    for image in list_images(os.path.join(root, images_dir)):
      stem = os.path.splitext(image)[0]
      folder = f"{masks_dir}/{stem}"
      if stem in stems:
        issues.append(Issue(folder, 0, f"another image of {images_dir}/ has the stem {stem!r} and so the same mask "
                                       "folder; rename one", image=join_rel(images_dir, image)))
        continue
      stems.add(stem)
      row = Row(join_rel(images_dir, image), folder, 0, split, masks=[])
      if os.path.isdir(os.path.join(root, folder)):
        for name in sorted(os.listdir(os.path.join(root, folder))):
          file = f"{folder}/{name}"
          if not name.lower().endswith(".png") or not os.path.isfile(os.path.join(root, file)):
            continue
          label = _INSTANCE.match(os.path.splitext(name)[0]).group("label")
          row.masks.append(Mask(label, "png", file, name))
      rows.append(row)
    masks_path = os.path.join(root, masks_dir)
    for dirpath, dirnames, filenames in os.walk(masks_path):
      dirnames.sort()
      stem = os.path.relpath(dirpath, masks_path).replace(os.sep, "/")
      if any(n.lower().endswith(".png") for n in filenames) and stem not in stems:
        issues.append(Issue(f"{masks_dir}/{stem}", 0, f"mask folder has no image {images_dir}/{stem}.<ext>; add the "
                                                      "image or delete the folder"))
  return Source(root=root, rows=rows, issues=issues)
