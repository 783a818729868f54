"""Detection sources (COCO, YOLO, VOC, PaliGemma JSONL) with the bad cases mixed in: exact JSONL, the
reported rejections, every good row kept, and records equal to the JSONL."""
import json
import os

import numpy as np
import pytest
import yaml

from components.convert import ConvertConfig, boxes_to_loc_text, convert, list_shards, read_shard

CLASSES = ["cat", "dog"]
# name, maker, kwargs, stored (w, h), boxes in the stored grid, outcome: None = kept, else reason substring.
TRAIN = [
    ("good.jpg", "rgb", {"w": 100, "h": 50}, (100, 50), [("cat", (10, 10, 30, 30)), ("dog", (60, 5, 90, 45))], None),
    ("grey.png", "grey", {}, (40, 30), [("dog", (0, 0, 10, 12))], None),
    ("rgba.png", "rgba", {}, (40, 30), [], None),
    ("cmyk.jpg", "cmyk", {}, (40, 30), [("cat", (5, 4, 15, 14))], None),
    ("sixteen.png", "sixteen_bit", {}, (40, 30), [("cat", (1, 2, 3, 4))], None),
    ("palette.png", "palette", {}, (40, 30), [("dog", (10, 10, 21, 20))], None),
    ("exif.jpg", "exif_rotated", {"orientation": 6}, (60, 40), [("cat", (5, 9, 25, 21))], None),
    ("boxes.jpg", "rgb", {"w": 100, "h": 50}, (100, 50), [("cat", (90, 40, 120, 70)), ("dog", (5, 5, 5, 30))], None),
    ("truncated.jpg", "truncated", {}, (64, 64), [("cat", (1, 1, 5, 5))], "truncated"),
    ("empty.jpg", "empty", {}, (10, 10), [("cat", (1, 1, 5, 5))], "empty"),
    ("text.jpg", "text_file", {}, (10, 10), [("cat", (1, 1, 5, 5))], "not an image"),
    ("bomb.png", "bomb", {}, (100_000, 100_000), [("dog", (1, 1, 5, 5))], "over the budget"),
    ("missing.jpg", None, {}, (10, 10), [("cat", (1, 1, 5, 5))], "does not exist"),
]
VALID = [("v1.jpg", "rgb", {"w": 64, "h": 48}, (64, 48), [("dog", (8, 9, 41, 41))], None)]
# Boxes avoid coordinates that land exactly between two bins (v * 1023 = k + 0.5), where the float error of
# a normalised source (YOLO, loc text) may round either way.
# What the kept rows must become: written (w, h) and boxes in the written image.
EXPECTED = {
    "good.jpg": ((100, 50), [("cat", (10, 10, 30, 30)), ("dog", (60, 5, 90, 45))]),
    "grey.png": ((40, 30), [("dog", (0, 0, 10, 12))]),
    "rgba.png": ((40, 30), []),
    "cmyk.jpg": ((40, 30), [("cat", (5, 4, 15, 14))]),
    "sixteen.png": ((40, 30), [("cat", (1, 2, 3, 4))]),
    "palette.png": ((40, 30), [("dog", (10, 10, 21, 20))]),
    "exif.jpg": ((40, 60), [("cat", (19, 5, 31, 25))]),  # rotated 90 degrees clockwise with the pixels
    "boxes.jpg": ((100, 50), [("cat", (90, 40, 100, 50))]),  # clipped; the flat dog box dropped
    "v1.jpg": ((64, 48), [("dog", (8, 9, 41, 41))]),
}


def _make_images(imgs, folder, entries):
  os.makedirs(folder, exist_ok=True)
  for name, maker, kwargs, *_ in entries:
    if maker:
      getattr(imgs, maker)(os.path.join(folder, name), **kwargs)


def _escape_target(imgs, tmp_path):
  return imgs.rgb(str(tmp_path / "outside.jpg"))


def build_coco(imgs, tmp_path):
  root = tmp_path / "coco"
  where = {}
  for split, entries in (("train", TRAIN), ("valid", VALID)):
    _make_images(imgs, root / split, entries)
    files = [(n, size, boxes) for n, _, _, size, boxes, _ in entries]
    if split == "train":
      files.append(("../../outside.jpg", (64, 48), []))
    coco = {"images": [], "annotations": [],
            "categories": [{"id": 0, "name": "animals", "supercategory": "none"},  # Roboflow's parent class
                           {"id": 1, "name": "cat", "supercategory": "animals"},
                           {"id": 2, "name": "dog", "supercategory": "animals"}]}
    for image_id, (name, (w, h), boxes) in enumerate(files, start=10):
      coco["images"].append({"id": image_id, "file_name": name, "width": w, "height": h})
      for label, (x1, y1, x2, y2) in boxes:
        coco["annotations"].append({"id": len(coco["annotations"]), "image_id": image_id,
                                    "category_id": CLASSES.index(label) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1]})
      where[name] = (f"{split}/_annotations.coco.json", image_id, f"{split}/{name}")
    with open(root / split / "_annotations.coco.json", "w") as f:
      json.dump(coco, f)
  return root, where, lambda split, name: f"images/{split}/{name.rsplit('.', 1)[0]}.jpg"


def build_yolo(imgs, tmp_path):
  root = tmp_path / "yolo"
  with open(root.mkdir() or root / "data.yaml", "w") as f:
    yaml.safe_dump({"names": {0: "cat", 1: "dog"}, "nc": 2, "train": "train/images"}, f)
  where = {}
  for split, entries in (("train", TRAIN), ("valid", VALID)):
    _make_images(imgs, root / split / "images", entries)
    os.makedirs(root / split / "labels")
    for name, _, _, (w, h), boxes, _ in entries:
      stem = name.rsplit(".", 1)[0]
      with open(root / split / "labels" / f"{stem}.txt", "w") as f:
        for label, (x1, y1, x2, y2) in boxes:
          f.write(f"{CLASSES.index(label)} {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}\n")
      where[name] = (f"{split}/labels/{stem}.txt", 0, f"{split}/images/{name}")
  os.symlink(_escape_target(imgs, tmp_path), root / "train" / "images" / "escape.jpg")
  where["escape.jpg"] = ("train/images/escape.jpg", 0, "train/images/escape.jpg")
  # YOLO lists images from disk: a "missing image" is a label file without its image.
  where["missing.jpg"] = ("train/labels/missing.txt", 0, None)
  return root, where, lambda split, name: f"images/{split}/images/{name.rsplit('.', 1)[0]}.jpg"


def build_voc(imgs, tmp_path):
  root = tmp_path / "voc"
  where = {}
  for split, entries in (("train", TRAIN), ("valid", VALID)):
    _make_images(imgs, root / split, entries)
    files = [(n, size, boxes) for n, _, _, size, boxes, _ in entries]
    if split == "train":
      files.append(("../../outside.jpg", (64, 48), []))
    for name, (w, h), boxes in files:
      stem = name.rsplit(".", 1)[0] if not name.startswith("..") else "escape"
      objects = "".join(f"<object><name>{label}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
                        f"<ymax>{y2}</ymax></bndbox></object>" for label, (x1, y1, x2, y2) in boxes)
      with open(root / split / f"{stem}.xml", "w") as f:
        f.write(f"<annotation><filename>{name}</filename><size><width>{w}</width><height>{h}</height>"
                f"<depth>3</depth></size>{objects}</annotation>")
      where[name] = (f"{split}/{stem}.xml", 0, f"{split}/{name}")
  return root, where, lambda split, name: f"images/{split}/{name.rsplit('.', 1)[0]}.jpg"


def build_jsonl(imgs, tmp_path):
  """Roboflow's PaliGemma export: dataset/_annotations.{split}.jsonl with every image in dataset/."""
  root = tmp_path / "pg" / "dataset"
  where = {}
  for split, entries in (("train", TRAIN), ("valid", VALID)):
    _make_images(imgs, root, entries)
    files = [(n, size, boxes) for n, _, _, size, boxes, _ in entries]
    if split == "train":
      files.append(("../../outside.jpg", (64, 48), []))
    with open(root / f"_annotations.{split}.jsonl", "w") as f:
      for line, (name, (w, h), boxes) in enumerate(files, start=1):
        suffix = boxes_to_loc_text([b for _, b in boxes], [label for label, _ in boxes], w, h)
        f.write(json.dumps({"image": name, "prefix": "detect cat ; dog", "suffix": suffix}) + "\n")
        where[name] = (f"_annotations.{split}.jsonl", line, name)
  return tmp_path / "pg", where, lambda split, name: f"images/{name.rsplit('.', 1)[0]}.jpg"


BUILDERS = {"coco": build_coco, "yolo": build_yolo, "voc": build_voc, "paligemma-jsonl": build_jsonl}


def _expected_row(out_image, name):
  (w, h), boxes = EXPECTED[name]
  return {"image": out_image, "prefix": "detect cat ; dog",
          "suffix": boxes_to_loc_text([b for _, b in boxes], [label for label, _ in boxes], w, h),
          "width": w, "height": h, "objects": [{"label": label, "box": [float(v) for v in b]} for label, b in boxes]}


@pytest.mark.parametrize("fmt", list(BUILDERS))
def test_detection_source_converts_exactly(tmp_path, imgs, fmt):
  root, where, out_name = BUILDERS[fmt](imgs, tmp_path)
  out = tmp_path / "out"
  report = convert(ConvertConfig(input=str(root), format=fmt, task="detect", output=str(out), workers=1,
                                 max_pixels=10_000_000, progress=False))
  rows = imgs.read_output(out)
  assert rows["test"] == []  # the source's splits are kept: no test split invented
  for split, entries in (("train", TRAIN), ("valid", VALID)):
    kept = [e[0] for e in entries if e[5] is None]
    if fmt in ("yolo", "voc"):  # one file per image: rows come in file-name order
      kept = sorted(kept, key=lambda n: n.rsplit(".", 1)[0])
    got = rows[split]
    assert [r["image"] for r in got] == [out_name(split, n) for n in kept]  # every good row, in source order
    for name, row in zip(kept, got, strict=True):
      expected = _expected_row(out_name(split, name), name)
      if fmt in ("yolo", "paligemma-jsonl"):  # normalised sources: pixel boxes within one bin / float error
        bins = np.array([expected["width"], expected["height"]] * 2) / 1023
        for a, b in zip(row.pop("objects"), expected.pop("objects"), strict=True):
          assert a["label"] == b["label"] and np.all(np.abs(np.array(a["box"]) - b["box"]) <= bins / 2 + 1e-3)
      source_image = row.pop("source_image")  # the path in the source, relative to its root
      assert source_image.rsplit("/", 1)[-1] == name and not source_image.startswith(("/", "..")), source_image
      assert {k: v for k, v in row.items() if k != "id"} == expected, name

  rejected = {(r["file"], r["row"]): r for r in report["rejected"]}
  bad = [e for e in TRAIN if e[5]] + [("escape.jpg" if fmt == "yolo" else "../../outside.jpg", None, {}, None, [],
                                       "symlink" if fmt == "yolo" else "'..'")]
  for name, *_, reason in bad:
    if fmt == "yolo" and name == "missing.jpg":
      reason = "has no image"
    key = "../../outside.jpg" if name.startswith("..") and fmt != "yolo" else name
    file, row, image = where[key]
    assert (file, row) in rejected, (name, report["rejected"])
    assert reason in rejected[(file, row)]["reason"], rejected[(file, row)]
    if image:
      assert rejected[(file, row)]["image"].endswith(image.split("/")[-1])
  assert len(report["rejected"]) == len(bad)

  repaired = {r["image"].rsplit("/", 1)[-1]: r["reason"] for r in report["repaired"]}
  assert "dropped: zero" in repaired["boxes.jpg"]
  if fmt != "paligemma-jsonl":  # loc text cannot say "outside the image": nothing there to clip
    assert "clipped" in repaired["boxes.jpg"]
  assert "EXIF orientation 6" in repaired["exif.jpg"]
  assert "CMYK" in repaired["cmyk.jpg"] and "white" in repaired["rgba.png"]
  assert report["splits"]["train"]["examples"] == 8 and report["splits"]["valid"]["objects"] == {"cat": 0, "dog": 1}
  assert report["classes"] == CLASSES

  for split in ("train", "valid", "test"):
    records = [r for shard in list_shards(str(out), split) for r in read_shard(shard)]
    assert [(r["id"], r["image_path"], r["prefix"], r["suffix"]) for r in records] == [
        (r["id"], r["image"], r["prefix"], r["suffix"]) for r in rows[split]]
    for record in records:
      assert record["image"] == (out / record["image_path"]).read_bytes()


def test_bad_class_name_is_a_clear_error(tmp_path, imgs):
  root = tmp_path / "yolo"
  _make_images(imgs, root / "images", [("a.jpg", "rgb", {}, None, None, None)])
  os.makedirs(root / "labels")
  (root / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
  (root / "classes.txt").write_text("traffic ; light\n")
  with pytest.raises(Exception, match=r"class name 'traffic ; light'.*rename"):
    convert(ConvertConfig(input=str(root), format="yolo", task="detect", output=str(tmp_path / "o"), workers=1,
                          progress=False))
  coco_root = tmp_path / "coco"
  _make_images(imgs, coco_root, [("a.jpg", "rgb", {}, None, None, None)])
  (coco_root / "ann.json").write_text(json.dumps({
      "images": [{"id": 1, "file_name": "a.jpg"}], "categories": [{"id": 1, "name": "<b>"}],
      "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}]}))
  with pytest.raises(Exception, match=r"ann.json, row 1 .*class name '<b>'"):
    convert(ConvertConfig(input=str(coco_root), format="coco", task="detect", output=str(tmp_path / "o"),
                          workers=1, progress=False))


def test_classes_flag_sets_prompt_order_and_drops_other_classes(tmp_path, imgs):
  root, _, _ = build_voc(imgs, tmp_path)
  report = convert(ConvertConfig(input=str(root), format="voc", task="detect", output=str(tmp_path / "o"),
                                 classes=("dog",), workers=1, progress=False))
  rows = imgs.read_output(tmp_path / "o")
  good = next(r for r in rows["train"] if r["image"].endswith("good.jpg"))
  assert good["prefix"] == "detect dog" and [o["label"] for o in good["objects"]] == ["dog"]
  assert any("not in --classes" in r["reason"] for r in report["repaired"])
