"""The other folder layouts each reader documents: where images, annotations and splits are found."""
import json
import os

import yaml

from components.convert import ConvertConfig, convert


def _convert(tmp_path, root, fmt, task="detect", **kw):
  return convert(ConvertConfig(input=str(root), format=fmt, task=task, output=str(tmp_path / "out"), workers=1,
                               progress=False, **kw))


def _images_by_split(imgs, out):
  return {s: [r["image"] for r in rows] for s, rows in imgs.read_output(out).items()}


def test_yolo_ultralytics_layout_with_names_list(tmp_path, imgs):
  root = tmp_path / "y"
  for split, name in (("train", "a"), ("val", "b")):
    imgs.rgb(str(root / "images" / split / f"{name}.jpg"), 100, 100)
    os.makedirs(root / "labels" / split)
    (root / "labels" / split / f"{name}.txt").write_text("1 0.5 0.5 0.2 0.4\n0 0.1 0.1 0.1\n")
  (root / "data.yaml").write_text(yaml.safe_dump({"names": ["person", "car"]}))
  report = _convert(tmp_path, root, "yolo")
  rows = imgs.read_output(tmp_path / "out")
  assert [r["image"] for r in rows["train"]] == ["images/images/train/a.jpg"]
  assert [r["image"] for r in rows["valid"]] == ["images/images/val/b.jpg"]
  assert rows["train"][0]["prefix"] == "detect person ; car"
  assert rows["train"][0]["suffix"] == "<loc0307><loc0409><loc0716><loc0614> car"
  assert any("line 2 dropped" in r["reason"] for r in report["repaired"])


def test_yolo_flat_layout_with_classes_txt_is_split_by_seed(tmp_path, imgs):
  root = tmp_path / "y"
  os.makedirs(root / "labels")
  for i in range(10):
    imgs.rgb(str(root / "images" / f"{i}.jpg"))
    if i % 2:
      (root / "labels" / f"{i}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
  (root / "classes.txt").write_text("thing\n")
  report = _convert(tmp_path, root, "yolo", seed=1)
  by_split = _images_by_split(imgs, tmp_path / "out")
  assert sorted(sum(by_split.values(), [])) == sorted(f"images/images/{i}.jpg" for i in range(10))
  assert report["split_rule"]["kind"] == "hash" and report["split_rule"]["seed"] == 1
  rows = [r for s in imgs.read_output(tmp_path / "out").values() for r in s]
  assert sorted(r["suffix"] == "" for r in rows) == [False] * 5 + [True] * 5  # images without labels are kept


def test_voc_devkit_layout_with_imagesets(tmp_path, imgs):
  root = tmp_path / "VOC"
  os.makedirs(root / "Annotations")
  os.makedirs(root / "ImageSets" / "Main")
  for stem in ("x1", "x2", "x3"):
    imgs.rgb(str(root / "JPEGImages" / f"{stem}.jpg"), 50, 50)
    (root / "Annotations" / f"{stem}.xml").write_text(
        f"<annotation><filename>{stem}.jpg</filename><object><name>bird</name><bndbox><xmin>5</xmin><ymin>5</ymin>"
        "<xmax>20</xmax><ymax>30</ymax></bndbox></object></annotation>")
  (root / "ImageSets" / "Main" / "train.txt").write_text("x1\nx3\n")
  (root / "ImageSets" / "Main" / "val.txt").write_text("x2\n")
  _convert(tmp_path, root, "voc")
  assert _images_by_split(imgs, tmp_path / "out") == {
      "train": ["images/JPEGImages/x1.jpg", "images/JPEGImages/x3.jpg"], "valid": ["images/JPEGImages/x2.jpg"],
      "test": []}


def test_coco_own_layout_instances_file(tmp_path, imgs):
  root = tmp_path / "coco"
  imgs.rgb(str(root / "val2017" / "000001.jpg"), 80, 40)
  os.makedirs(root / "annotations")
  (root / "annotations" / "instances_val2017.json").write_text(json.dumps({
      "images": [{"id": 1, "file_name": "000001.jpg", "width": 80, "height": 40}],
      "categories": [{"id": 3, "name": "car", "supercategory": "vehicle"}, {"id": 1, "name": "person"}],
      "annotations": [{"id": 9, "image_id": 1, "category_id": 3, "bbox": [8, 4, 16, 8], "iscrowd": 0}]}))
  _convert(tmp_path, root, "coco")
  (row,) = imgs.read_output(tmp_path / "out")["valid"]
  assert row["image"] == "images/val2017/000001.jpg"
  assert row["prefix"] == "detect person ; car"  # categories by id
  assert row["suffix"] == "<loc0102><loc0102><loc0307><loc0307> car"


def test_paligemma_single_file_and_maestro_layout(tmp_path, imgs):
  single = tmp_path / "single"
  imgs.rgb(str(single / "pics" / "a.jpg"))
  (single / "data.jsonl").write_text(json.dumps({"image": "pics/a.jpg", "prefix": "ocr", "suffix": "HELLO"}) + "\n")
  _convert(tmp_path, single / "data.jsonl", "paligemma-jsonl", "ocr", splits=(("test", 1.0),))
  assert [(r["image"], r["suffix"]) for r in imgs.read_output(tmp_path / "out")["test"]] == [("images/pics/a.jpg", "HELLO")]

  maestro = tmp_path / "maestro"
  for split in ("train", "valid"):
    imgs.rgb(str(maestro / split / "img.jpg"))
    (maestro / split / "annotations.jsonl").write_text(
        json.dumps({"image": "img.jpg", "prefix": "caption en", "suffix": split}) + "\n")
  _convert(tmp_path, maestro, "paligemma-jsonl", "caption")
  rows = imgs.read_output(tmp_path / "out")
  assert [(r["image"], r["suffix"]) for r in rows["train"]] == [("images/train/img.jpg", "train")]
  assert [(r["image"], r["suffix"]) for r in rows["valid"]] == [("images/valid/img.jpg", "valid")]


def test_csv_folder_with_a_file_per_split(tmp_path, imgs):
  root = tmp_path / "csv"
  for split in ("train", "val", "test"):
    imgs.rgb(str(root / f"{split}.jpg"))
    (root / f"{split}.csv").write_text(f"image,text\n{split}.jpg,{split.upper()}\n")
  _convert(tmp_path, root, "csv", "ocr")
  rows = imgs.read_output(tmp_path / "out")
  assert {s: [(r["prefix"], r["suffix"]) for r in rows[s]] for s in rows} == {
      "train": [("ocr", "TRAIN")], "valid": [("ocr", "VAL")], "test": [("ocr", "TEST")]}
