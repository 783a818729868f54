"""Other detectors' outputs scored beside ours: COCO results JSON in `evaluate score`, coco_results.json out,
and images found by their stable key whatever layout the dataset was converted from.

The datasets are real conversions (components.convert) of one set of pictures laid out as COCO (Roboflow:
`valid/_annotations.coco.json`, images beside it) and as YOLO (`valid/images`, `valid/labels`).
"""
import contextlib
import io
import json
import re
import os

import numpy as np
import pytest
import yaml
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from components.convert import ConvertConfig, convert
from components.evaluate import coco_results, keys, score
from components.evaluate.__main__ import main

CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "bird"},
              {"id": 7, "name": "fish"}]  # fish: a category with no box at all
SIZES = [(96, 64), (80, 80), (120, 90), (64, 96), (100, 60), (72, 72), (90, 120), (110, 70), (84, 84)]


def make_pictures(seed=0):
  """(file name, (w, h), [(category id, [x, y, w, h])]): boxes on half pixels, so that convert's 1/1000-pixel
  rounding leaves them exact; the last picture has no object."""
  rng = np.random.default_rng(seed)
  pictures = []
  for i, (w, h) in enumerate(SIZES):
    boxes = []
    for _ in range(0 if i == len(SIZES) - 1 else int(rng.integers(1, 5))):
      bw, bh = rng.integers(8, w // 2) + 0.5 * rng.integers(0, 2), rng.integers(8, h // 2) + 0.5 * rng.integers(0, 2)
      x, y = 0.5 * rng.integers(0, 2 * (w - bw)), 0.5 * rng.integers(0, 2 * (h - bh))
      boxes.append((int(rng.choice([1, 2, 3])), [float(x), float(y), float(bw), float(bh)]))
    pictures.append((f"{i:06d}.jpg" if i % 3 == 0 else f"img_{i:03d}.jpg", (w, h), boxes))
  return pictures


def write_picture(path, size, seed):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
  Image.fromarray(pixels).save(path, quality=95)


def coco_source(root, pictures):
  """Roboflow's COCO layout; returns the annotation file (the ground truth pycocotools reads)."""
  gt = {"images": [], "annotations": [], "categories": CATEGORIES}
  for i, (name, (w, h), boxes) in enumerate(pictures):
    image_id = 100 + 7 * i  # ids unrelated to the file names
    write_picture(os.path.join(root, "valid", name), (w, h), i)
    gt["images"].append({"id": image_id, "file_name": name, "width": w, "height": h})
    for category, (x, y, bw, bh) in boxes:
      gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": image_id, "category_id": category,
                                "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": 0})
  path = os.path.join(root, "valid", "_annotations.coco.json")
  with open(path, "w") as f:
    json.dump(gt, f)
  return path


def yolo_source(root, pictures):
  """The same pictures in Roboflow's YOLO layout (class index = COCO id order: cat, dog, bird, fish)."""
  order = [c["id"] for c in CATEGORIES]
  with open(os.path.join(os.makedirs(root, exist_ok=True) or root, "data.yaml"), "w") as f:
    yaml.safe_dump({"names": [c["name"] for c in CATEGORIES], "nc": len(CATEGORIES)}, f)
  for i, (name, (w, h), boxes) in enumerate(pictures):
    write_picture(os.path.join(root, "valid", "images", name), (w, h), i)
    os.makedirs(os.path.join(root, "valid", "labels"), exist_ok=True)
    with open(os.path.join(root, "valid", "labels", name.rsplit(".", 1)[0] + ".txt"), "w") as f:
      for category, (x, y, bw, bh) in boxes:
        f.write(f"{order.index(category)} {(x + bw / 2) / w} {(y + bh / 2) / h} {bw / w} {bh / h}\n")


def converted(source, fmt, out, **kw):
  convert(ConvertConfig(input=str(source), format=fmt, task="detect", output=str(out), workers=1, progress=False,
                        **kw))
  return str(out)


def detector_results(gt_path, seed=1):
  """What a detector might output for the ground truth: jittered hits, misses, false positives (some of a
  class with no ground truth), all with distinct scores."""
  with open(gt_path) as f:
    gt = json.load(f)
  rng = np.random.default_rng(seed)
  sizes = {i["id"]: (i["width"], i["height"]) for i in gt["images"]}
  results = []
  for ann in gt["annotations"]:
    if rng.random() < 0.15:
      continue  # missed
    x, y, w, h = ann["bbox"]
    jitter = rng.normal(0, 0.08 * min(w, h), 4)
    results.append({"image_id": ann["image_id"], "category_id": ann["category_id"] if rng.random() > 0.1 else 3,
                    "bbox": [x + jitter[0], y + jitter[1], max(1.0, w + jitter[2]), max(1.0, h + jitter[3])],
                    "score": float(rng.uniform(0.3, 1.0))})
  for image_id, (w, h) in sizes.items():
    for _ in range(int(rng.integers(0, 3))):
      bw, bh = rng.uniform(5, w / 2), rng.uniform(5, h / 2)
      results.append({"image_id": image_id, "category_id": int(rng.choice([1, 2, 3, 7])),
                      "bbox": [rng.uniform(0, w - bw), rng.uniform(0, h - bh), bw, bh], "score": float(rng.uniform(0, 0.9))})
  return results


def pycocotools_eval(gt_path, results_path):
  with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(gt_path)
    evaluator = COCOeval(gt, gt.loadRes(results_path), iouType="bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  names = {c["id"]: c["name"] for c in CATEGORIES}
  per_class = {}
  for k, cat in enumerate(evaluator.params.catIds):
    p = evaluator.eval["precision"][:, :, k, 0, -1]
    per_class[names[cat]] = float(p[p > -1].mean()) if (p > -1).any() else None
  return evaluator.stats[:3], per_class


def write_json(path, obj):
  with open(path, "w") as f:
    json.dump(obj, f)
  return str(path)


@pytest.fixture(scope="module")
def coco_dataset(tmp_path_factory):
  root = tmp_path_factory.mktemp("coco-source")
  pictures = make_pictures()
  gt_path = coco_source(str(root / "src"), pictures)
  return gt_path, converted(root / "src", "coco", root / "data"), pictures


def test_coco_results_score_as_pycocotools_does(coco_dataset, tmp_path, capsys):
  """The same mAP as COCOeval(iouType="bbox") on the same files (ground-truth COCO json + results json).

  Same quantity: COCOeval's first three stats (IoU .50:.95, .50, .75; all areas; 100 detections per image
  and class) and per-class AP. Our boxes are in units of each image (COCOeval's in pixels): IoU is the same.
  What we define differently, kept out of this test and documented in the README: convert keeps `iscrowd`
  regions as ordinary objects (pycocotools ignores them), and equal scores across images may rank in another
  order (ours: the references' order, pycocotools: image id order); these scores are all distinct.
  """
  gt_path, data, _ = coco_dataset
  results = write_json(tmp_path / "results.json", detector_results(gt_path))
  assert main(["score", "--task", "detect", "--predictions", results, "--references", f"{data}/valid.jsonl",
               "--output", str(tmp_path / "out")]) == 0
  ours = json.loads(capsys.readouterr().out)
  stats, per_class = pycocotools_eval(gt_path, results)
  assert 0.2 < stats[0] < 0.9  # a score with something to get right and wrong
  assert [ours["map"], ours["map50"], ours["map75"]] == pytest.approx(list(stats), abs=1e-12)
  assert {k: v["ap"] for k, v in ours["per_class"].items()} == pytest.approx(per_class, abs=1e-12)
  assert ours["missing_predictions"] == 0 and ours["unmatched_predictions"] == 0
  # Written back as COCO results, the boxes give pycocotools the same numbers again.
  again, _ = pycocotools_eval(gt_path, str(tmp_path / "out" / "coco_results.json"))
  assert list(again) == pytest.approx(list(stats), abs=1e-12)
  rows = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
  assert all("boxes" in r and r["prediction"].count("<loc") == 4 * len(r["boxes"]) for r in rows)


def test_our_predictions_as_coco_results(coco_dataset, tmp_path):
  """`coco_results.json` of loc-text predictions: COCO's own image and category ids, boxes in source pixels."""
  gt_path, data, _ = coco_dataset
  refs = [json.loads(line) for line in open(f"{data}/valid.jsonl")]
  preds = write_json(tmp_path / "p.jsonl", [])
  (tmp_path / "p.jsonl").write_text("".join(json.dumps({"image": r["image"], "prefix": r["prefix"],
                                                         "prediction": r["suffix"]}) + "\n" for r in refs))
  main(["score", "--task", "detect", "--predictions", preds, "--references", f"{data}/valid.jsonl",
        "--output", str(tmp_path / "out")])
  written = json.loads((tmp_path / "out" / "coco_results.json").read_text())
  with open(gt_path) as f:
    gt = json.load(f)
  assert sorted((r["image_id"], r["category_id"]) for r in written) == sorted(
      (a["image_id"], a["category_id"]) for a in gt["annotations"])
  sizes = {i["id"]: (i["width"], i["height"]) for i in gt["images"]}
  for r, a in zip(sorted(written, key=lambda r: (r["image_id"], r["bbox"])),
                  sorted(gt["annotations"], key=lambda a: (a["image_id"], a["bbox"]))):
    w, h = sizes[r["image_id"]]
    corners = lambda b: np.array([b[0], b[1], b[0] + b[2], b[1] + b[3]])
    assert np.all(np.abs(corners(r["bbox"]) - corners(a["bbox"])) <= np.array([w, h, w, h]) / 1023 / 2 + 1e-9)
  stats, _ = pycocotools_eval(gt_path, str(tmp_path / "out" / "coco_results.json"))
  assert stats[1] == 1.0  # every box found at IoU 0.5 from the loc text


def test_pixel_boxes_follow_the_source_size_when_convert_downscaled(tmp_path):
  """With --max-side the written images are smaller: results in source pixels still land on their objects."""
  pictures = make_pictures(seed=3)
  gt_path = coco_source(str(tmp_path / "src"), pictures)
  data = converted(tmp_path / "src", "coco", tmp_path / "data", max_side=48)
  refs = [json.loads(line) for line in open(f"{data}/valid.jsonl")]
  assert all(max(r["width"], r["height"]) == 48 and max(r["source_width"], r["source_height"]) > 48 for r in refs)
  with open(gt_path) as f:
    gt = json.load(f)
  perfect = write_json(tmp_path / "r.json", [{"image_id": a["image_id"], "category_id": a["category_id"],
                                              "bbox": a["bbox"], "score": 1.0} for a in gt["annotations"]])
  metrics = json.loads(run_score(["--predictions", perfect, "--references", f"{data}/valid.jsonl"]))
  assert metrics["map"] == pytest.approx(1.0)
  # Without the source size the same boxes would be read in the written image's pixels: far off.
  no_source = tmp_path / "no-source.jsonl"
  no_source.write_text("".join(json.dumps({k: v for k, v in r.items() if not k.startswith("source_w") and
                                           not k.startswith("source_h")}) + "\n" for r in refs))
  stripped = [json.loads(line) for line in open(no_source)]
  wrong = coco_results.read(perfect, stripped, coco_results.DatasetIds(stripped, data))
  assert score("detect", wrong, refs)[0]["map"] < 0.5


def run_score(args):
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    assert main(["score", "--task", "detect", *args]) == 0
  return out.getvalue()


def test_category_ids_the_dataset_does_not_know_are_an_error_unless_mapped(coco_dataset, tmp_path, capsys):
  gt_path, data, _ = coco_dataset
  with open(gt_path) as f:
    image_id = json.load(f)["images"][0]["id"]
  results = write_json(tmp_path / "r.json", [{"image_id": image_id, "category_id": 1, "bbox": [1, 1, 5, 5],
                                              "score": 0.5},
                                             {"image_id": image_id, "category_id": 42, "bbox": [1, 1, 9, 9],
                                              "score": 0.9}])
  # a user's mistake: one line, exit 2
  assert main(["score", "--task", "detect", "--predictions", results, "--references", f"{data}/valid.jsonl"]) == 2
  assert re.fullmatch(r"python -m components.evaluate score: error: .*r.json, result 2: category_id 42 is not one of "
                      r"the dataset's categories \(1: cat, 2: dog, 3: bird, 7: fish; from .*report.json "
                      r"\(source_categories\)\).*\n", capsys.readouterr().err)
  mapping = write_json(tmp_path / "names.json", {"1": "dog", "42": "cat"})
  metrics = json.loads(run_score(["--predictions", results, "--references", f"{data}/valid.jsonl",
                                  "--categories", mapping]))
  assert metrics["num_pred_boxes"] == 2 and metrics["unmatched_predictions"] == 0


def test_ultralytics_results_on_a_yolo_conversion(tmp_path):
  """ultralytics names images by file stem (an int when numeric) and numbers a custom dataset's classes
  from 1: every image is found and the exact boxes score 1."""
  pictures = make_pictures()
  yolo_source(str(tmp_path / "src"), pictures)
  data = converted(tmp_path / "src", "yolo", tmp_path / "data")
  order = [c["id"] for c in CATEGORIES]
  results = []
  for name, _, boxes in pictures:
    stem = name.rsplit(".", 1)[0]
    for category, bbox in boxes:
      results.append({"image_id": int(stem) if stem.isnumeric() else stem,
                      "category_id": order.index(category) + 1, "bbox": bbox, "score": 0.9})
  metrics = json.loads(run_score(["--predictions", write_json(tmp_path / "r.json", results),
                                  "--references", f"{data}/valid.jsonl"]))
  assert metrics["missing_predictions"] == 0 and metrics["unmatched_predictions"] == 0
  assert metrics["num_pred_boxes"] == metrics["num_gt_boxes"] == sum(len(b) for _, _, b in pictures)
  assert metrics["map50"] == 1.0 and metrics["map"] > 0.99  # YOLO's normalised source: float-level differences


@pytest.mark.parametrize("with_source_image", [False, True])
def test_predictions_from_a_coco_conversion_meet_a_yolo_conversion(coco_dataset, tmp_path, with_source_image):
  """The same pictures converted from COCO (images/valid/x.jpg) and from YOLO (images/valid/images/x.jpg):
  predictions made on one are scored against the other with no image missing."""
  _, coco_data, pictures = coco_dataset
  yolo_source(str(tmp_path / "src"), pictures)
  yolo_data = converted(tmp_path / "src", "yolo", tmp_path / "data")

  def rows(data):
    out = [json.loads(line) for line in open(f"{data}/valid.jsonl")]
    for r in out:  # convert writes source_image (the path in the source dataset); datasets of before do not
      assert r["source_image"] == r["image"].removeprefix("images/")
      if not with_source_image:
        del r["source_image"]
    return out

  coco_rows, yolo_rows = rows(coco_data), rows(yolo_data)
  assert {r["image"] for r in coco_rows}.isdisjoint(r["image"] for r in yolo_rows)  # the layouts differ
  predictions = [{**{k: r[k] for k in ("image", "source_image", "prefix") if k in r}, "prediction": r["suffix"]}
                 for r in coco_rows]
  metrics, records = score("detect", predictions, yolo_rows)
  assert metrics["missing_predictions"] == 0 and metrics["unmatched_predictions"] == 0
  assert metrics["map50"] == 1.0 and len(records) == len(pictures)


def test_path_endings_match_only_when_unambiguous():
  refs = [{"image": "images/a/x.jpg", "source_image": "train/cats/001.jpg"},
          {"image": "images/b/x.jpg", "source_image": "train/dogs/001.jpg"},
          {"image": "images/c.jpg", "source_image": "valid/c.jpg"}]
  index = keys.ImageIndex(refs)
  assert index.resolve({"image": "p/c.jpg", "source_image": "valid/images/c.jpg"}) == "valid/c.jpg"
  assert index.resolve({"image": "images/b/x.jpg"}) == "train/dogs/001.jpg"  # the same dataset, key absent
  assert index.resolve({"image": "q/dogs/001.jpg"}) == "train/dogs/001.jpg"  # the longest ending wins
  assert index.resolve({"image": "q/001.jpg"}) is None and index.ambiguous[0][0] == "q/001.jpg"
  assert index.resolve({"image": "d.jpg"}) is None
  assert keys.prefix_key("detect dog ; cat") == keys.prefix_key("detect  cat;dog") == "detect cat ; dog"
