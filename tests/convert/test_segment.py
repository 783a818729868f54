"""`--task segment`: COCO polygons and RLE, YOLO-seg, per-instance mask PNGs, PaliGemma JSONL with <seg> text.

Each kept row's suffix is what the model library writes for its masks (`masks_to_suffix` on the masks in
the written image's pixels, computed here independently with pycocotools / numpy), its `masks` carry those
masks as RLE, and each bad mask is reported by row while the rest is kept."""
import json
import os

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from components.convert import ConvertConfig, convert
from components.convert.core import ConversionError
from components.convert.segment import SegmentError
from components.paligemma import init_vqvae, load_vqvae, masks_to_suffix, save_vqvae
from components.paligemma.segmentation import mask_box

W, H = 40, 30


@pytest.fixture(scope="module")
def codec_path(tmp_path_factory):
  path = tmp_path_factory.mktemp("codec") / "codec.npz"
  save_vqvae(init_vqvae(5, widths=(4, 8, 16, 32), dim=16), str(path))
  return str(path)


def _rect(x1, y1, x2, y2, w=W, h=H):
  mask = np.zeros((h, w), bool)
  mask[y1:y2, x1:x2] = True
  return mask


def _rle(mask, compressed=True):
  encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
  if compressed:
    return {"size": list(encoded["size"]), "counts": encoded["counts"].decode("ascii")}
  flat = mask.flatten(order="F").astype(np.uint8)  # column-major runs, starting with zeros
  runs, value, n = [], 0, 0
  for v in flat:
    if v != value:
      runs.append(n)
      value, n = v, 0
    n += 1
  return {"size": list(mask.shape), "counts": runs + [n]}


def _polygon_mask(polygon, w=W, h=H):
  return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([polygon], h, w))).astype(bool)


def _decode(rle):
  return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(bool)


def _run(src, fmt, out, codec, **kw):
  cfg = ConvertConfig(input=str(src), format=fmt, task="segment", output=str(out), vqvae=codec, progress=False,
                      workers=kw.pop("workers", 1), splits=(("train", 1.0),), **kw)
  report = convert(cfg)
  rows = {}
  for split in ("train", "valid", "test"):
    with open(os.path.join(out, f"{split}.jsonl")) as f:
      rows.update({(r["source_image"], r["prefix"]): r for r in map(json.loads, f)})
  return report, rows


def _check_row(row, expected_masks, label, codec):
  """The suffix and `masks` of a kept row against masks computed by the test."""
  assert row["prefix"] == f"segment {label}"
  boxes = [mask_box(m) for m in expected_masks]
  assert row["suffix"] == masks_to_suffix(expected_masks, boxes, codec, [label] * len(expected_masks))
  assert [m["label"] for m in row["masks"]] == [label] * len(expected_masks)
  for m, expected, box in zip(row["masks"], expected_masks, boxes, strict=True):
    np.testing.assert_array_equal(_decode(m["rle"]), expected)
    assert m["rle"]["size"] == [row["height"], row["width"]]
    np.testing.assert_allclose(m["box"], box)


def _reasons(report, action):
  return {(i["image"], i["reason"]) for i in report[action]}


def test_coco_polygons_and_rle_with_bad_masks(tmp_path, imgs, codec_path):
  src = tmp_path / "src"
  (src / "images").mkdir(parents=True)
  names = ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg", "g.jpg"]
  for name in names:
    imgs.rgb(src / "images" / name, W, H)
  poly = [5, 5, 15, 5, 15, 20, 5, 20]
  anns = [
      # a: two cats (a polygon, a compressed RLE), one dog (an uncompressed RLE), a repeated dog, a crowd
      (1, 1, 1, poly), (2, 1, 1, _rle(_rect(20, 2, 30, 12))), (3, 1, 2, _rle(_rect(25, 15, 38, 28), False)),
      (4, 1, 2, _rle(_rect(25, 15, 38, 28), False)), (5, 1, 1, _rle(_rect(0, 0, 4, 4)), 1),
      # b: a polygon of 2 points (dropped) beside a good dog polygon
      (6, 2, 1, [1, 1, 9, 9]), (7, 2, 2, [2, 2, 12, 2, 12, 9]),
      (8, 3, 1, _rle(_rect(1, 1, 5, 5, 10, 10))),  # c: RLE of the wrong size
      (9, 4, 1, [50, 1, 60, 1, 60, 9]),  # d: polygon outside the image
      (10, 5, 1, _rle(np.zeros((H, W), bool))),  # e: empty RLE
      (11, 6, 1, _rle(_rect(1, 1, 5, 5), False) | {"counts": [3, 4]}),  # f: RLE counts of the wrong total
      # g: no annotation at all
  ]
  coco = {"images": [{"id": i + 1, "file_name": n, "width": W, "height": H} for i, n in enumerate(names)],
          "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
          "annotations": [{"id": a[0], "image_id": a[1], "category_id": a[2], "iscrowd": a[4] if len(a) > 4 else 0,
                           "segmentation": a[3] if isinstance(a[3], dict) else [a[3]]} for a in anns]}
  (src / "annotations.json").write_text(json.dumps(coco))
  codec = load_vqvae(codec_path)
  report, rows = _run(src / "annotations.json", "coco", tmp_path / "out", codec_path, workers=2)

  assert set(rows) == {("images/a.jpg", "segment cat"), ("images/a.jpg", "segment dog"),
                       ("images/b.jpg", "segment dog")}
  _check_row(rows["images/a.jpg", "segment cat"], [_polygon_mask(poly), _rect(20, 2, 30, 12)], "cat", codec)
  _check_row(rows["images/a.jpg", "segment dog"], [_rect(25, 15, 38, 28)], "dog", codec)
  _check_row(rows["images/b.jpg", "segment dog"], [_polygon_mask([2, 2, 12, 2, 12, 9])], "dog", codec)
  assert rows["images/a.jpg", "segment dog"]["source_id"] == 1
  repaired = " | ".join(r for _, r in _reasons(report, "repaired"))
  assert "annotation 4 ('dog') dropped: a copy of mask annotation 3" in repaired
  assert "annotation 5 ('cat') dropped: a crowd region" in repaired
  assert "annotation 6 polygon 1 dropped: a polygon with 2 point(s)" in repaired
  rejected = _reasons(report, "rejected")
  assert {image for image, _ in rejected} == {f"images/{n}" for n in "cdefg" for n in [n + ".jpg"]}
  by_image = {image: reason for image, reason in rejected}
  assert "RLE is 10x10, the image is 40x30" in by_image["images/c.jpg"]
  assert "entirely outside the 40x30 image" in by_image["images/d.jpg"]
  assert "empty: no pixel" in by_image["images/e.jpg"]
  assert "RLE counts cover 7 pixels" in by_image["images/f.jpg"]
  assert "nothing to segment: it has no instance mask" in by_image["images/g.jpg"]
  assert report["classes"] == ["cat", "dog"] and report["splits"]["train"]["objects"] == {"cat": 2, "dog": 2}


def test_exif_rotated_and_downscaled_masks_follow_the_image(tmp_path, imgs, codec_path):
  """An RLE in the stored grid of an image shown rotated 90 degrees, written at half size: the mask is rotated
  and resized with the image (numpy's rot90 and a 2x2 majority here), the polygon of the same rectangle too."""
  src = tmp_path / "src"
  (src / "images").mkdir(parents=True)
  imgs.exif_rotated(src / "images" / "r.jpg", 6, w=60, h=40, box=(6, 10, 26, 20))
  stored = _rect(6, 10, 26, 20, 60, 40)
  coco = {"images": [{"id": 1, "file_name": "r.jpg", "width": 60, "height": 40}],
          "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": _rle(stored)},
                          {"id": 2, "image_id": 1, "category_id": 2, "segmentation": [[6, 10, 26, 10, 26, 20, 6, 20]]}]}
  (src / "annotations.json").write_text(json.dumps(coco))
  _, rows = _run(src / "annotations.json", "coco", tmp_path / "out", codec_path, max_side=30)
  upright = np.rot90(stored, k=-1)  # clockwise: [60, 40]
  half = upright.reshape(30, 2, 20, 2).mean(axis=(1, 3)) >= 0.5
  cat, dog = rows["images/r.jpg", "segment cat"], rows["images/r.jpg", "segment dog"]
  assert (cat["width"], cat["height"]) == (20, 30)
  np.testing.assert_array_equal(_decode(cat["masks"][0]["rle"]), half)
  np.testing.assert_allclose(cat["masks"][0]["box"], [6 / 60, 20 / 40, 26 / 60, 30 / 40])
  np.testing.assert_array_equal(_decode(dog["masks"][0]["rle"]), half)


def test_yolo_seg_polygons(tmp_path, imgs, codec_path):
  src = tmp_path / "src"
  (src / "images").mkdir(parents=True)
  (src / "labels").mkdir()
  (src / "data.yaml").write_text("names: [cat, dog]\n")
  for name in ("a", "b"):
    imgs.rgb(src / "images" / f"{name}.jpg", W, H)
  cat = [0.1, 0.1, 0.5, 0.1, 0.5, 0.6, 0.1, 0.6]
  dog = [0.6, 0.5, 0.9, 0.5, 0.75, 0.9]
  (src / "labels" / "a.txt").write_text(
      "0 " + " ".join(map(str, cat)) + "\n1 " + " ".join(map(str, dog)) + "\n"
      "1 0.5 0.5 0.2 0.2\n"  # a box: no mask
      "0 0.1 0.1 0.2 0.2 0.3\n")  # an odd count: no polygon
  (src / "labels" / "b.txt").write_text("0 0.1 0.1 0.3 0.3\n")  # only a box: nothing to segment
  codec = load_vqvae(codec_path)
  report, rows = _run(src, "yolo", tmp_path / "out", codec_path)

  def pixels(p):
    return [v * (W if i % 2 == 0 else H) for i, v in enumerate(p)]

  assert set(rows) == {("images/a.jpg", "segment cat"), ("images/a.jpg", "segment dog")}
  _check_row(rows["images/a.jpg", "segment cat"], [_polygon_mask(pixels(cat))], "cat", codec)
  _check_row(rows["images/a.jpg", "segment dog"], [_polygon_mask(pixels(dog))], "dog", codec)
  repaired = " | ".join(r for _, r in _reasons(report, "repaired"))
  assert "line 3 dropped: a box (class cx cy w h), not a polygon" in repaired
  assert "line 4 dropped: a polygon must be a flat list of x, y pairs" in repaired
  (image, reason), = _reasons(report, "rejected")
  assert image == "images/b.jpg" and "nothing to segment" in reason and "not a polygon" in reason


def test_mask_pngs(tmp_path, imgs, codec_path):
  src = tmp_path / "src"
  for split in ("train", "valid"):
    (src / split / "images").mkdir(parents=True)
  imgs.rgb(src / "train" / "images" / "a.jpg", W, H)
  imgs.rgb(src / "train" / "images" / "b.jpg", W, H)
  imgs.rgb(src / "valid" / "images" / "c.jpg", W, H)
  masks = {"train/masks/a/traffic_light_1.png": _rect(2, 2, 10, 10), "train/masks/a/traffic_light_2.png": _rect(12, 3, 20, 25),
           "train/masks/a/dog.png": _rect(22, 5, 35, 20), "train/masks/a/cat_1.png": _rect(1, 1, 5, 5, 10, 10),
           "train/masks/b/cat_1.png": np.zeros((H, W), bool), "valid/masks/c/dog_1.png": _rect(3, 3, 30, 20),
           "valid/masks/orphan/dog_1.png": _rect(3, 3, 30, 20)}
  for path, mask in masks.items():
    (src / path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(src / path)
  # A palette PNG with index 1 as foreground (how some tools save binary masks) reads the same.
  p = Image.fromarray(_rect(3, 3, 30, 20).astype(np.uint8), "P")
  p.putpalette([0, 0, 0, 255, 255, 255])
  p.save(src / "valid/masks/c/dog_1.png")
  codec = load_vqvae(codec_path)
  report, rows = _run(src, "mask-png", tmp_path / "out", codec_path)

  assert set(rows) == {("train/images/a.jpg", "segment traffic_light"), ("train/images/a.jpg", "segment dog"),
                       ("valid/images/c.jpg", "segment dog")}
  _check_row(rows["train/images/a.jpg", "segment traffic_light"], [_rect(2, 2, 10, 10), _rect(12, 3, 20, 25)],
             "traffic_light", codec)
  _check_row(rows["valid/images/c.jpg", "segment dog"], [_rect(3, 3, 30, 20)], "dog", codec)
  with open(tmp_path / "out" / "valid.jsonl") as f:
    assert [json.loads(line)["prefix"] for line in f] == ["segment dog"]  # the source's split kept
  rejected = {(i["file"], i["image"]): i["reason"] for i in report["rejected"]}
  assert ("no usable mask: mask cat_1.png ('cat') dropped: mask PNG is 10x10, the image is 40x30"
          in rejected["train/masks/a", "train/images/a.jpg"])
  assert "no usable mask: mask cat_1.png ('cat') dropped: empty" in rejected["train/masks/b", "train/images/b.jpg"]
  assert "has no image" in rejected["valid/masks/orphan", None]
  assert len(rejected) == 3  # b's cat row; the orphan folder; a's cat row (its only mask had the wrong size)


def test_paligemma_jsonl_with_seg_tokens_passes_through(tmp_path, imgs, codec_path):
  src = tmp_path / "src"
  src.mkdir()
  codec = load_vqvae(codec_path)
  for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
    imgs.rgb(src / name, W, H)
  imgs.exif_rotated(src / "r.jpg", 6)
  mask = _rect(5, 5, 20, 25)
  good = masks_to_suffix([mask, _rect(22, 2, 38, 12)], [mask_box(mask), mask_box(_rect(22, 2, 38, 12))], codec,
                         ["cat", "cat"])
  short = good.split(" ; ")[0].replace("<seg", "<xseg", 1)  # 15 <seg> tokens left
  lines = [{"image": "a.jpg", "prefix": "segment cat", "suffix": good},
           {"image": "b.jpg", "prefix": "segment cat", "suffix": short + " ; " + good.split(" ; ")[1]},
           {"image": "c.jpg", "prefix": "detect cat", "suffix": good},
           {"image": "d.jpg", "prefix": "segment cat", "suffix": ""},  # no instance: a valid answer
           {"image": "r.jpg", "prefix": "segment cat", "suffix": good}]
  (src / "train.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
  report, rows = _run(src, "paligemma-jsonl", tmp_path / "out", codec_path)

  assert set(rows) == {("a.jpg", "segment cat"), ("d.jpg", "segment cat")}
  assert rows["a.jpg", "segment cat"]["suffix"] == good and "masks" not in rows["a.jpg", "segment cat"]
  rejected = {i["row"]: i["reason"] for i in report["rejected"]}
  assert set(rejected) == {2, 3, 5}
  assert "1 unreadable object(s)" in rejected[2] and "has 0 <seg> tokens" in rejected[2]
  assert "is not 'segment <class>'" in rejected[3]
  assert "EXIF orientation 6" in rejected[5]


def test_codec_from_a_model_directory_and_clear_errors(tmp_path, imgs, codec_path):
  src = tmp_path / "src"
  (src / "images").mkdir(parents=True)
  imgs.rgb(src / "images" / "a.jpg", W, H)
  coco = {"images": [{"id": 1, "file_name": "a.jpg"}], "categories": [{"id": 1, "name": "cat"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[1, 1, 9, 1, 9, 9]]}]}
  (src / "annotations.json").write_text(json.dumps(coco))
  model = tmp_path / "model"
  model.mkdir()
  (model / "vae-oid.npz").write_bytes(open(codec_path, "rb").read())
  (model / "model.json").write_text(json.dumps({"name": "tiny", "checkpoint": "tiny.npz", "vqvae": "vae-oid.npz"}))
  _, by_dir = _run(src / "annotations.json", "coco", tmp_path / "a", str(model))
  _, by_file = _run(src / "annotations.json", "coco", tmp_path / "b", codec_path)
  assert by_dir["images/a.jpg", "segment cat"]["suffix"] == by_file["images/a.jpg", "segment cat"]["suffix"]

  with pytest.raises(SegmentError, match="--task segment needs the mask codec"):
    _run(src / "annotations.json", "coco", tmp_path / "c", None)
  (model / "model.json").write_text(json.dumps({"name": "tiny", "checkpoint": "tiny.npz"}))
  with pytest.raises(SegmentError, match="names no mask codec"):
    _run(src / "annotations.json", "coco", tmp_path / "d", str(model))
  with pytest.raises(SegmentError, match="neither an .npz, a finetune workdir"):
    _run(src / "annotations.json", "coco", tmp_path / "d2", str(tmp_path))
  with pytest.raises(SegmentError, match="not found"):
    _run(src / "annotations.json", "coco", tmp_path / "e", str(tmp_path / "missing.npz"))
  with pytest.raises(ValueError, match="--task segment reads coco, yolo, mask-png or paligemma-jsonl"):
    _run(src, "csv", tmp_path / "f", codec_path)
  with pytest.raises(ConversionError, match="has no usable row"):
    (src / "annotations.json").write_text(json.dumps({**coco, "annotations": []}))
    _run(src / "annotations.json", "coco", tmp_path / "g", codec_path)


def test_cli_and_component_take_the_codec(tmp_path, imgs, codec_path, capsys):
  from kfp.dsl import Dataset

  from components.convert.__main__ import main
  from components.convert.component import _convert_dataset

  src = tmp_path / "src"
  (src / "images").mkdir(parents=True)
  imgs.rgb(src / "images" / "a.jpg", W, H)
  (src / "labels").mkdir()
  (src / "data.yaml").write_text("names: [cat]\n")
  (src / "labels" / "a.txt").write_text("0 0.1 0.1 0.5 0.1 0.5 0.6\n")
  args = ["--input", str(src), "--format", "yolo", "--task", "segment", "--splits", "train=1", "--workers", "1",
          "--no-progress"]
  assert main(args + ["--output", str(tmp_path / "none")]) == 2
  err = capsys.readouterr().err
  assert err.startswith("python -m components.convert: error: --task segment needs the mask codec"), err
  assert len(err.splitlines()) == 1
  assert main(args + ["--output", str(tmp_path / "cli"), "--vqvae", codec_path]) == 0

  dataset = Dataset(uri=str(tmp_path / "kfp"))
  _convert_dataset(str(src), "yolo", "segment", dataset, splits="train=1", workers=1, vqvae=codec_path)
  cli, kfp = ([json.loads(line) for line in open(tmp_path / d / "train.jsonl")] for d in ("cli", "kfp"))
  assert [(r["prefix"], r["suffix"], r["masks"]) for r in cli] == [(r["prefix"], r["suffix"], r["masks"]) for r in kfp]
  assert cli[0]["prefix"] == "segment cat" and cli[0]["suffix"].count("<seg") == 16


def test_a_class_name_that_breaks_the_text_names_its_row(tmp_path, imgs, codec_path):
  src = tmp_path / "src"
  (src / "images").mkdir(parents=True)
  (src / "masks" / "a").mkdir(parents=True)
  imgs.rgb(src / "images" / "a.jpg", W, H)
  Image.fromarray(_rect(2, 2, 9, 9).astype(np.uint8) * 255).save(src / "masks" / "a" / "cat<1>_1.png")
  with pytest.raises(ConversionError, match=r"masks/a, row 0 \(image images/a.jpg\): class name 'cat<1>'"):
    _run(src, "mask-png", tmp_path / "out", codec_path)
