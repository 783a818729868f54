"""`evaluate --task segment`: the codec found, answers decoded and pasted, metrics against hand-computed and
pycocotools values, parsed objects in predictions.jsonl, masks drawn in the report, `evaluate run` end to end."""
import contextlib
import dataclasses
import io
import json
import os
import shutil

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from components import paligemma
from components.evaluate import masks, runner, score, segmentation
from components.evaluate.__main__ import main
from components.paligemma.segmentation import object_text

METRIC_KEYS = {"miou", "box_acc50", "box_acc75", "mask_map", "mask_map50", "seg_token_acc", "miou_ceiling",
               "malformed_segments", "invalid_predictions", "empty_predictions", "unknown_class_objects"}


@pytest.fixture(scope="module")
def codec():
  return paligemma.init_vqvae(0, widths=(4, 8, 8, 8), dim=8)


def obj(bins, codes, label=None):
  return object_text(np.asarray(bins, np.float64) / 1023, codes, label)


def read(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def rle_dict(mask):
  r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
  return {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")}


def test_hand_checked_metrics(codec):
  """Four examples whose every number is counted by hand (no `masks`: the decoded references are the truth).

  The random codec decodes these codes to all-foreground maps (asserted), so a pasted mask is its box: a
  prediction with the reference's box has mask IoU 1 whatever codes it writes, and the codes alone decide
  `seg_token_acc`. References: A1, A2 (unlabelled, `segment cat`), B1, C1, D1 — five objects.
  - A: the reference itself (labels given)                    -> 2 matched, IoU 1, 32/32 tokens
  - B: B1's box with 4 of 16 codes changed, a false positive,
       and a partial <seg> run (malformed)                     -> 1 matched, IoU 1, 12/16 tokens
  - C: empty                                                   -> C1 missed, 0/16
  - D: D1's box and codes labelled `dog`                       -> unknown class, D1 missed, 0/16
  miou = box_acc50 = box_acc75 = 3/5; seg_token_acc = 44/80; ceiling 1. Mask AP of `cat` (the only class
  with references): detections in order TP, TP, TP, FP (all score 1) -> precision 1 up to recall 3/5, so
  61 of COCO's 101 recall points -> 61/101 at every IoU threshold (matched masks are identical).
  """
  codes = np.arange(16) * 8
  changed = codes.copy()
  changed[:4] += 1
  assert (paligemma.decode_masks(codec, np.stack([codes, changed])) > 0).all()
  a1, a2, b1 = (100, 100, 400, 300), (500, 500, 900, 1000), (200, 300, 700, 600)
  c1, d1, fp = (0, 0, 1023, 1023), (300, 300, 600, 600), (800, 0, 1000, 200)
  refs = [{"image": "a.png", "prefix": "segment cat", "suffix": obj(a1, codes) + " ; " + obj(a2, codes)},
          {"image": "b.png", "prefix": "segment cat", "suffix": obj(b1, codes, "cat")},
          {"image": "c.png", "prefix": "segment cat", "suffix": obj(c1, codes)},
          {"image": "d.png", "prefix": "segment cat", "suffix": obj(d1, codes)}]
  refs = [{**r, "height": 40, "width": 50, "_line": i + 1} for i, r in enumerate(refs)]
  partial = "<loc0001><loc0002><loc0003><loc0004><seg001> cat"
  preds = [{"image": "a.png", "prefix": "segment cat",
            "prediction": obj(a1, codes, "cat") + " ; " + obj(a2, codes, "cat")},
           {"image": "b.png", "prefix": "segment cat",
            "prediction": obj(b1, changed) + " ; " + obj(fp, codes, "cat") + " ; " + partial},
           {"image": "c.png", "prefix": "segment cat", "prediction": ""},
           {"image": "d.png", "prefix": "segment cat", "prediction": obj(d1, codes, "dog")}]
  metrics, records = score("segment", preds, refs, vqvae=codec)
  assert metrics["task"] == "segment" and METRIC_KEYS <= set(metrics)
  assert metrics["miou"] == pytest.approx(3 / 5) and metrics["box_acc50"] == pytest.approx(3 / 5)
  assert metrics["box_acc75"] == pytest.approx(3 / 5) and metrics["seg_token_acc"] == pytest.approx(44 / 80)
  assert metrics["miou_ceiling"] == 1.0
  assert metrics["mask_map50"] == pytest.approx(61 / 101, abs=1e-12)
  assert metrics["mask_map"] == pytest.approx(61 / 101, abs=1e-12)
  assert (metrics["num_examples"], metrics["num_gt_objects"], metrics["num_pred_objects"]) == (4, 5, 5)
  assert (metrics["malformed_segments"], metrics["empty_predictions"], metrics["unknown_class_objects"],
          metrics["invalid_predictions"], metrics["unreadable_reference_objects"]) == (1, 1, 1, 0, 0)
  assert [(m["line"], m["image"]) for m in metrics["malformed"]] == [(None, "b.png")]
  assert "has 1 <seg> tokens" in metrics["malformed"][0]["reason"]
  # per example: the report's boxes (unmatched predictions dashed) and masks, the parsed objects
  by_image = {r["image"]: r for r in records}
  assert [r["score"] for r in records] == [1.0, 1.0, 0.0, 0.0]
  assert [b[6] for b in by_image["b.png"]["pred_boxes"]] == [True, False]
  assert by_image["d.png"]["pred_objects"][0]["label"] == "dog" and by_image["c.png"]["pred_objects"] == []
  assert by_image["b.png"]["pred_objects"][0]["codes"] == changed.tolist()
  assert by_image["b.png"]["pred_objects"][0]["box"] == pytest.approx([v / 1023 for v in b1])
  pasted = masks.decode_rle(by_image["a.png"]["pred_objects"][1]["rle"])
  assert pasted.shape == (40, 50) and pasted.sum() == (int(40 * 900 / 1023) - int(40 * 500 / 1023)) * (
      int(50 * 1000 / 1023) - int(50 * 500 / 1023))  # the box's pixels: all foreground
  assert len(by_image["b.png"]["gt_masks"]) == 1 and len(by_image["b.png"]["pred_masks"]) == 2


def pycocotools_segm(truth, predictions, size):
  """mask mAP and mAP@.5 by pycocotools: one image per example, one category (`cat`), scores 1."""
  h, w = size
  images = [{"id": i + 1, "height": h, "width": w} for i in range(len(truth))]
  gt, dt = [], []
  for i, (t, p) in enumerate(zip(truth, predictions)):
    for m in t:
      r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
      gt.append({"id": len(gt) + 1, "image_id": i + 1, "category_id": 1, "segmentation": r, "iscrowd": 0,
                 "area": float(mask_utils.area(r)), "bbox": list(mask_utils.toBbox(r))})
    for m in p:
      r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
      dt.append({"id": len(dt) + 1, "image_id": i + 1, "category_id": 1, "segmentation": r, "score": 1.0,
                 "area": float(mask_utils.area(r)), "bbox": list(mask_utils.toBbox(r)), "iscrowd": 0})
  cocos = []
  for anns in (gt, dt):
    c = COCO()
    c.dataset = {"images": images, "categories": [{"id": 1, "name": "cat"}], "annotations": anns}
    with contextlib.redirect_stdout(io.StringIO()):
      c.createIndex()
    cocos.append(c)
  e = COCOeval(*cocos, iouType="segm")
  with contextlib.redirect_stdout(io.StringIO()):
    e.evaluate()
    e.accumulate()
    e.summarize()
  return e.stats[0], e.stats[1]


def rectangle(size, y1, x1, y2, x2):
  m = np.zeros(size, bool)
  m[y1:y2, x1:x2] = True
  return m


def test_score_cli_with_reference_masks(codec, tmp_path, capsys, make_dataset):
  """`evaluate score --task segment --vqvae MODEL_DIR` on references with full-resolution `masks`: every
  number equals one computed here from the model library's decoding and pycocotools."""
  size = (48, 64)  # make_dataset's images
  truth = [[rectangle(size, 5, 6, 30, 40), rectangle(size, 20, 30, 45, 60)], [rectangle(size, 10, 10, 40, 30)]]
  boxes = [[paligemma.segmentation.mask_box(m) for m in ms] for ms in truth]
  suffixes = [paligemma.masks_to_suffix(ms, bs, codec) for ms, bs in zip(truth, boxes)]
  refs = [{"image": f"images/{i}.png", "prefix": "segment cat", "suffix": s,
           "masks": [{"label": "cat", "box": [float(v) for v in b], "rle": rle_dict(m)} for m, b in zip(ms, bs)]}
          for i, (s, ms, bs) in enumerate(zip(suffixes, truth, boxes))]
  refs[0].update(height=48, width=64)  # the other's size comes from its masks
  data = make_dataset(tmp_path / "data", refs)
  parsed = [paligemma.parse_segments(s).objects for s in suffixes]
  # image 0: the first object exact, the second's box 130 bins higher; image 1: every code changed
  y1, x1, y2, x2 = parsed[0][1].loc_bins
  moved = [y1 - 130, x1, y2 - 130, x2]
  pred_texts = [object_text(parsed[0][0].box, parsed[0][0].codes) + " ; "
                + object_text(np.asarray(moved) / 1023, parsed[0][1].codes),
                object_text(parsed[1][0].box, (parsed[1][0].codes + 1) % 128, "cat")]
  preds = tmp_path / "preds.jsonl"
  preds.write_text("".join(json.dumps({"image": f"images/{i}.png", "prefix": "segment cat", "prediction": t}) + "\n"
                           for i, t in enumerate(pred_texts)))
  model_dir = tmp_path / "model"
  model_dir.mkdir()
  paligemma.save_vqvae(codec, str(model_dir / "codec.npz"))
  (model_dir / "model.json").write_text(json.dumps({"checkpoint": "x.npz", "vqvae": "codec.npz"}))
  out = tmp_path / "out"
  assert main(["score", "--task", "segment", "--predictions", str(preds), "--references", f"{data}/valid.jsonl",
               "--vqvae", str(model_dir), "--output", str(out)]) == 0
  metrics = json.loads(capsys.readouterr().out)
  assert json.loads((out / "metrics.json").read_text()) == metrics

  decoded_pred = [paligemma.suffix_to_masks(t, *size, codec).objects for t in pred_texts]
  decoded_ref = [paligemma.suffix_to_masks(s, *size, codec).objects for s in suffixes]

  def iou(a, b):
    return (a & b).sum() / (a | b).sum()
  # every prediction pairs with the reference of the same place (asserted through the boxes' overlap)
  assert metrics["miou"] == pytest.approx(np.mean([iou(p.mask, t) for ps, ts in zip(decoded_pred, truth)
                                                   for p, t in zip(ps, ts)]), abs=1e-12)
  assert metrics["miou_ceiling"] == pytest.approx(np.mean([iou(r.mask, t) for rs, ts in zip(decoded_ref, truth)
                                                           for r, t in zip(rs, ts)]), abs=1e-12)
  box_ious = [segmentation.box_iou(p.box, r.box) for ps, rs in zip(decoded_pred, decoded_ref) for p, r in zip(ps, rs)]
  assert 0.5 <= box_ious[1] < 0.75 and box_ious[0] == box_ious[2] == 1.0  # moved: between the two
  assert (metrics["box_acc50"], metrics["box_acc75"]) == (1.0, pytest.approx(2 / 3))
  assert metrics["seg_token_acc"] == pytest.approx(32 / 48)
  want_map, want_map50 = pycocotools_segm(truth, [[p.mask for p in ps] for ps in decoded_pred], size)
  assert metrics["mask_map"] == pytest.approx(want_map, abs=1e-9)
  assert metrics["mask_map50"] == pytest.approx(want_map50, abs=1e-9)

  rows = read(out / "predictions.jsonl")
  assert [len(r["objects"]) for r in rows] == [2, 1]
  for row, objects in zip(rows, decoded_pred):
    for got, want in zip(row["objects"], objects):
      assert got["codes"] == want.codes.tolist() and got["label"] == "cat" and got["score"] == 1.0
      assert np.array_equal(masks.decode_rle(got["rle"]), want.mask)
  page = (out / "report.html").read_text()
  assert page.count("class='gt-mask'") == 2 and page.count("class='pred-mask'") == 2

  # as the baseline of another scoring, these predictions are decoded with the same codec
  assert main(["score", "--task", "segment", "--predictions", str(preds), "--references", f"{data}/valid.jsonl",
               "--vqvae", str(model_dir / "codec.npz"), "--output", str(tmp_path / "again"),
               "--baseline", str(out)]) == 0
  again = json.loads(capsys.readouterr().out)
  assert again["baseline"] == {k: v for k, v in metrics.items() if k != "malformed"}
  assert (tmp_path / "again" / "report.html").read_text().count("class='pred-mask'") == 4  # base and tuned


def test_mask_layer_paints_the_mask_semi_transparent():
  from PIL import Image

  from components.evaluate import report

  mask = rectangle((20, 40), 5, 10, 15, 30)
  uri = report._mask_layer([rle_dict(mask)], report.PRED_COLOUR)
  import base64
  layer = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))
  assert layer.shape == (20, 40, 4)
  assert (layer[..., 3] == np.where(mask, report.MASK_ALPHA, 0)).all()
  assert (layer[mask][:, :3] == (255, 0, 255)).all()


def test_score_cli_flags(tmp_path, capsys):
  refs = tmp_path / "refs.jsonl"
  refs.write_text(json.dumps({"image": "a.png", "prefix": "segment cat", "suffix": ""}) + "\n")
  for argv, message in ((["--task", "segment"], "--task segment needs --vqvae"),
                        (["--task", "detect", "--vqvae", "codec.npz"], "--vqvae is the mask codec of --task segment")):
    with pytest.raises(SystemExit):
      main(["score", "--predictions", str(refs), "--references", str(refs), *argv])
    assert message in capsys.readouterr().err


def test_codec_found_beside_the_checkpoint(codec, tmp_path):
  model_dir = tmp_path / "model"
  model_dir.mkdir()
  paligemma.save_vqvae(codec, str(model_dir / "vae.npz"))
  (model_dir / "model.json").write_text(json.dumps({"checkpoint": "pg.npz", "vqvae": "vae.npz"}))
  workdir = tmp_path / "workdir"
  workdir.mkdir()
  (workdir / "config.json").write_text("{}")
  (workdir / "model.json").write_text(json.dumps({"base_checkpoint": str(model_dir / "pg.npz")}))
  for found in (masks.load_codec(None, str(model_dir)), masks.load_codec(None, str(workdir)),
                masks.load_codec(None, str(model_dir / "pg.npz")), masks.load_codec(str(model_dir / "vae.npz"), "x"),
                masks.load_codec(str(workdir), str(tmp_path / "elsewhere"))):
    assert found.keys() == codec.keys() and all(np.array_equal(found[k], codec[k]) for k in codec)
  (model_dir / "model.json").write_text(json.dumps({"checkpoint": "pg.npz"}))
  with pytest.raises(ValueError, match=r"--checkpoint .*workdir names none .*give --vqvae PATH"):
    masks.load_codec(None, str(workdir))
  with pytest.raises(FileNotFoundError, match="mask codec .*missing.npz not found"):
    masks.load_codec(str(tmp_path / "missing.npz"))


@pytest.fixture
def segment_model_dir(tiny_model_dir, codec, tmp_path):
  """The tiny model directory with a codec named by its model.json, as `download --vqvae` writes it."""
  root = tmp_path / "model"
  shutil.copytree(tiny_model_dir, root)
  paligemma.save_vqvae(codec, str(root / "vae-oid.npz"))
  meta = json.loads((root / "model.json").read_text())
  (root / "model.json").write_text(json.dumps({**meta, "vqvae": "vae-oid.npz"}))
  return str(root)


def test_run_segment_end_to_end(segment_model_dir, tiny_model_dir, codec, tmp_path, make_dataset):
  size = (48, 64)
  shapes = [rectangle(size, 4 + i, 3 + 2 * i, 30 + i, 40) for i in range(3)]
  rows = [{"image": f"images/{i}.png", "prefix": "segment cat",
           "suffix": paligemma.mask_to_suffix(m, paligemma.segmentation.mask_box(m), codec)}
          for i, m in enumerate(shapes)]  # no sizes: they come from the image files
  data = make_dataset(tmp_path / "data", rows)
  args = runner.RunArgs(checkpoint=segment_model_dir, data=data, task="segment", output=str(tmp_path / "out"),
                        max_decode_len=6, batch_size=2)
  metrics = runner.run(args)
  assert METRIC_KEYS <= set(metrics) and metrics["num_examples"] == 3 and metrics["miou_ceiling"] == 1.0
  rows_out = read(tmp_path / "out" / "predictions.jsonl")
  assert len(rows_out) == 3 and all(isinstance(r["objects"], list) for r in rows_out)
  page = (tmp_path / "out" / "report.html").read_text()
  assert page.count("class='gt-mask'") == 3
  # a model directory without a codec fails before its weights load, saying what to give
  with pytest.raises(ValueError, match="give --vqvae PATH"):
    runner.run(dataclasses.replace(args, checkpoint=tiny_model_dir))


def test_bad_references(codec, caplog):
  """An unreadable reference object is logged, counted and left out; `masks` that do not fit the suffix's
  objects stop the scoring naming the file and line."""
  codes = np.arange(16)
  good = obj((100, 100, 500, 500), codes)
  bad = "<loc0100><loc0100><loc0500><loc0500><seg001><seg002>"  # a partial <seg> run
  refs = [{"image": "a.png", "prefix": "segment cat", "suffix": f"{good} ; {bad}", "height": 20, "width": 30,
           "_line": 7}]
  preds = [{"image": "a.png", "prefix": "segment cat", "prediction": good}]
  metrics, _ = score("segment", preds, refs, vqvae=codec, references_name="valid.jsonl")
  assert metrics["unreadable_reference_objects"] == 1 and metrics["num_gt_objects"] == 1
  assert metrics["miou"] == 1.0 and "valid.jsonl, line 7" in caplog.text and "has 2 <seg> tokens" in caplog.text
  two = [{"label": "cat", "box": [0, 0, 1, 1], "rle": rle_dict(np.ones((20, 30), bool))}] * 2
  with pytest.raises(ValueError, match=r"valid.jsonl, line 7: 2 `masks` for the 1 readable objects"):
    score("segment", preds, [{**refs[0], "masks": two}], vqvae=codec, references_name="valid.jsonl")
  wrong_size = [{"label": "cat", "box": [0, 0, 1, 1], "rle": rle_dict(np.ones((10, 30), bool))}]
  with pytest.raises(ValueError, match=r"valid.jsonl, line 7: mask 1 is 10×30, the image 20×30"):
    score("segment", preds, [{**refs[0], "masks": wrong_size}], vqvae=codec, references_name="valid.jsonl")
  with pytest.raises(ValueError, match=r"line 7: mask 1 is not"):
    score("segment", preds, [{**refs[0], "masks": [{"label": "cat"}]}], vqvae=codec, references_name="valid.jsonl")
  with pytest.raises(ValueError, match="needs the mask codec"):
    score("segment", preds, refs)
