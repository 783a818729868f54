"""Every source row accounted for: duplicated ids, file names and rows, in every input format.

For each format a source with duplicates is converted and `kept + rejected == rows in the source` (kept:
the examples written, rejected: report.json's `rejected`); nothing is merged silently: repeated rows are
rejected as duplicates, conflicting ones all rejected, repeated boxes dropped as repairs, each with a reason.
"""
import io
import json
import os

import pytest
from PIL import Image

from components.convert import ConvertConfig, convert

SPLITS = ("train", "valid", "test")


def _convert(tmp_path, root, fmt, task, **kw):
  report = convert(ConvertConfig(input=str(root), format=fmt, task=task, output=str(tmp_path / "out"), workers=1,
                                 progress=False, splits=(("train", 1.0),), **kw))
  rows = []
  for split in SPLITS:
    with open(tmp_path / "out" / f"{split}.jsonl") as f:
      rows += [json.loads(line) for line in f if line.strip()]
  assert sum(report["counts"].values()) == len(rows)
  return report, rows


def _image(path, color, size=(32, 24)):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.new("RGB", size, color).save(path)


def _reasons(report, action="rejected"):
  return [(r["image"], r["reason"]) for r in report[action]]


def test_coco_duplicate_image_id_reports_both_images_and_attaches_no_box(tmp_path):
  root = tmp_path / "coco"
  for name, color in (("a", (200, 0, 0)), ("dup_a", (0, 200, 0)), ("dup_b", (0, 0, 200)), ("c", (90, 90, 0)),
                      ("e", (0, 90, 90))):
    _image(str(root / f"{name}.png"), color)
  coco = {
      "images": [{"id": 1, "file_name": "a.png"}, {"id": 15, "file_name": "dup_a.png"},
                 {"id": 15, "file_name": "dup_b.png"},
                 {"id": 3, "file_name": "c.png"}, {"id": 4, "file_name": "c.png"},  # one file, two boxes sets
                 {"id": 5, "file_name": "e.png"}, {"id": 6, "file_name": "e.png"}],  # one file listed twice
      "categories": [{"id": 1, "name": "cat"}],
      "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10]},
                      {"id": 2, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10]},  # a copy of 1
                      {"id": 3, "image_id": 15, "category_id": 1, "bbox": [2, 2, 8, 8]},
                      {"id": 4, "image_id": 3, "category_id": 1, "bbox": [3, 3, 5, 5]},
                      {"id": 5, "image_id": 4, "category_id": 1, "bbox": [4, 4, 6, 6]},
                      {"id": 6, "image_id": 5, "category_id": 1, "bbox": [5, 5, 9, 9]},
                      {"id": 7, "image_id": 6, "category_id": 1, "bbox": [5, 5, 9, 9]}],
  }
  (root / "instances.json").write_text(json.dumps(coco))
  report, rows = _convert(tmp_path, root, "coco", "detect")
  assert len(rows) + len(report["rejected"]) == len(coco["images"])
  assert sorted((r["image"], len(r["objects"])) for r in rows) == [("images/a.jpg", 1), ("images/e.jpg", 1)]
  rejected = _reasons(report)
  shared = [image for image, reason in rejected if "image id 15 is used by 2 images (dup_a.png, dup_b.png)" in reason]
  assert sorted(shared) == ["dup_a.png", "dup_b.png"]  # both images named, neither kept
  assert sum("c.png has 2 annotation rows with different boxes" in reason for _, reason in rejected) == 2
  assert sum("duplicate of instances.json, row 5" in reason for _, reason in rejected) == 1
  assert any("a copy of box 1" in reason for _, reason in _reasons(report, "repaired"))


def test_coco_captions_of_a_shared_image_id_are_rejected(tmp_path):
  root = tmp_path / "coco"
  for name in ("a", "b", "c"):
    _image(str(root / f"{name}.png"), (len(name) * 40, 0, 0))
  coco = {"images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}, {"id": 2, "file_name": "c.png"}],
          "annotations": [{"id": 1, "image_id": 1, "caption": "one"}, {"id": 2, "image_id": 2, "caption": "two"},
                          {"id": 3, "image_id": 2, "caption": "three"}, {"id": 4, "image_id": 1, "caption": "one"}]}
  (root / "captions_train.json").write_text(json.dumps(coco))
  report, rows = _convert(tmp_path, root, "coco", "caption")
  assert len(rows) + len(report["rejected"]) == len(coco["annotations"])
  assert [r["suffix"] for r in rows] == ["one"]
  # The repeated caption names its image (COCO caption rows are numbered by image id), the shared id's its annotations.
  assert sorted(str(r["row"]) for r in report["rejected"]) == ["1", "annotation 2", "annotation 3"]


def test_yolo_images_sharing_a_label_file_and_repeated_lines(tmp_path):
  root = tmp_path / "yolo"
  (root / "labels").mkdir(parents=True)
  (root / "data.yaml").write_text("names: [cat, dog]\n")
  for name, color in (("a.jpg", (200, 0, 0)), ("a.png", (0, 200, 0)), ("b.jpg", (0, 0, 200)), ("c.jpg", (9, 9, 9))):
    _image(str(root / "images" / name), color)
  (root / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
  (root / "labels" / "b.txt").write_text("1 0.5 0.5 0.4 0.4\n1 0.5 0.5 0.4 0.4\n0 0.2 0.2 0.1 0.1\n")
  report, rows = _convert(tmp_path, root, "yolo", "detect")
  assert len(rows) + len(report["rejected"]) == 4  # images in the source
  assert sorted((r["image"], len(r["objects"])) for r in rows) == [("images/images/b.jpg", 2),
                                                                   ("images/images/c.jpg", 0)]
  assert sorted(image for image, reason in _reasons(report) if "share this label file" in reason) == [
      "images/a.jpg", "images/a.png"]
  assert any("box 2 ('dog') dropped: a copy of box 1" in reason for _, reason in _reasons(report, "repaired"))


def _voc(path, filename, boxes):
  objects = "".join(f"<object><name>{label}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
                    f"<ymax>{y2}</ymax></bndbox></object>" for label, (x1, y1, x2, y2) in boxes)
  path.write_text(f"<annotation><filename>{filename}</filename><size><width>32</width><height>24</height></size>"
                  f"{objects}</annotation>")


def test_voc_two_annotation_files_for_one_image(tmp_path):
  root = tmp_path / "voc"
  root.mkdir()
  for name, color in (("a.jpg", (200, 0, 0)), ("b.jpg", (0, 200, 0)), ("c.jpg", (0, 0, 200))):
    _image(str(root / name), color)
  _voc(root / "a.xml", "a.jpg", [("cat", (1, 1, 10, 10))])
  _voc(root / "a_copy.xml", "a.jpg", [("cat", (1, 1, 10, 10))])  # the same labels again
  _voc(root / "b.xml", "b.jpg", [("cat", (1, 1, 10, 10))])
  _voc(root / "b_other.xml", "b.jpg", [("dog", (2, 2, 12, 12))])  # other labels for the same image
  _voc(root / "c.xml", "c.jpg", [("dog", (3, 3, 9, 9)), ("dog", (3, 3, 9, 9))])
  report, rows = _convert(tmp_path, root, "voc", "detect")
  assert len(rows) + len(report["rejected"]) == 5  # annotation files in the source
  assert sorted((r["image"], len(r["objects"])) for r in rows) == [("images/a.jpg", 1), ("images/c.jpg", 1)]
  rejected = {(r["file"], r["reason"].split(" (")[0]) for r in report["rejected"]}
  assert rejected == {("a_copy.xml", "duplicate of a.xml, row 0"),
                      ("b.xml", "image b.jpg has 2 annotation rows with different boxes"),
                      ("b_other.xml", "image b.jpg has 2 annotation rows with different boxes")}


def test_paligemma_jsonl_repeated_and_conflicting_rows(tmp_path):
  root = tmp_path / "pg"
  for name, color in (("x.png", (200, 0, 0)), ("y.png", (0, 200, 0)), ("z.png", (0, 0, 200))):
    _image(str(root / name), color)
  lines = [{"image": "x.png", "prefix": "caption en", "suffix": "red"},
           {"image": "x.png", "prefix": "caption en", "suffix": "red"},  # a repeated row
           {"image": "x.png", "prefix": "caption en", "suffix": "a red square"},  # a second caption: kept
           {"image": "y.png", "prefix": "caption en", "suffix": "green"}]
  (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
  report, rows = _convert(tmp_path, root, "paligemma-jsonl", "caption")
  assert len(rows) + len(report["rejected"]) == len(lines)
  assert sorted(r["suffix"] for r in rows) == ["a red square", "green", "red"]
  assert [(r["row"], r["reason"]) for r in report["rejected"]] == [
      (2, "duplicate of data.jsonl, row 1 (same image and labels); dropped")]

  detect = [{"image": "x.png", "prefix": "detect cat", "suffix": "<loc0100><loc0100><loc0500><loc0500> cat"},
            {"image": "x.png", "prefix": "detect cat", "suffix": "<loc0100><loc0100><loc0500><loc0500> cat"},
            {"image": "y.png", "prefix": "detect cat", "suffix": "<loc0100><loc0100><loc0500><loc0500> cat"},
            {"image": "y.png", "prefix": "detect cat", "suffix": "<loc0200><loc0200><loc0600><loc0600> cat"},
            {"image": "z.png", "prefix": "detect cat", "suffix": ""}]
  (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in detect))
  report, rows = _convert(tmp_path, root, "paligemma-jsonl", "detect")
  assert len(rows) + len(report["rejected"]) == len(detect)
  assert sorted(r["image"] for r in rows) == ["images/x.jpg", "images/z.jpg"]
  assert sorted(r["row"] for r in report["rejected"]) == [2, 3, 4]


def test_csv_repeated_rows(tmp_path):
  root = tmp_path / "csv"
  for name, color in (("x.jpg", (200, 0, 0)), ("y.jpg", (0, 200, 0))):
    _image(str(root / name), color)
  (root / "c.csv").write_text("image,caption\nx.jpg,red\nx.jpg,red\ny.jpg,green\nx.jpg,crimson\n")
  report, rows = _convert(tmp_path, root, "csv", "caption")
  assert len(rows) + len(report["rejected"]) == 4
  assert sorted(r["suffix"] for r in rows) == ["crimson", "green", "red"]
  assert [(r["row"], r["reason"].split(" (")[0]) for r in report["rejected"]] == [(3, "duplicate of c.csv, row 2")]


def _png(color):
  buffer = io.BytesIO()
  Image.new("RGB", (16, 12), color).save(buffer, "PNG")
  return buffer.getvalue()


def test_hf_repeated_rows_and_ids(tmp_path):
  datasets = pytest.importorskip("datasets")
  red, blue = _png((255, 0, 0)), _png((0, 0, 255))
  ds = datasets.Dataset.from_dict({
      "id": [7, 7, 8, 7],  # a repeated id: the rows stay separate examples (ids are not used to join)
      "image": [{"bytes": red, "path": "r.png"}, {"bytes": red, "path": "r.png"}, {"bytes": blue, "path": "b.png"},
                {"bytes": red, "path": "r.png"}],
      "caption": ["red", "red", "blue", "a red square"],  # row 1 repeats row 0
  }, features=datasets.Features({"id": datasets.Value("int32"), "image": datasets.Image(),
                                 "caption": datasets.Value("string")}))
  path = tmp_path / "hf"
  datasets.DatasetDict({"train": ds}).save_to_disk(str(path))
  report, rows = _convert(tmp_path, path, "hf", "caption")
  assert len(rows) + len(report["rejected"]) == 4
  assert sorted(r["suffix"] for r in rows) == ["a red square", "blue", "red"]
  assert [(r["row"], r["reason"].split(" (")[0]) for r in report["rejected"]] == [(1, f"duplicate of {path}[train], row 0")]
  assert len({r["image"] for r in rows}) == 2  # the red rows are one image, written once
