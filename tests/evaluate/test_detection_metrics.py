"""Detection scoring: parity with pycocotools' COCOeval run directly, and the edge cases of model output."""
import contextlib
import io
import json
import logging
import math

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from components.convert.locations import boxes_to_loc_text
from components.evaluate import parse_detections, score, score_files, scoring

CLASSES = ["cat", "dog", "bird"]
PROMPT = "detect cat ; dog ; bird"


def loc_text(bins_and_labels) -> str:
  """Objects given as (y1, x1, y2, x2) bins -> PaliGemma text, through the convert step's encoder."""
  if not bins_and_labels:
    return ""
  xyxy = [(x1, y1, x2, y2) for (y1, x1, y2, x2), _ in bins_and_labels]
  return boxes_to_loc_text(xyxy, [label for _, label in bins_and_labels], width=1023, height=1023)


def tokens_for(objects, scores):
  """Token texts and log-probs whose per-box mean log-prob is log(score); separators get log-prob 0."""
  tokens, logprobs = [], []
  for i, (((y1, x1, y2, x2), label), s) in enumerate(zip(objects, scores)):
    if i:
      tokens.append(" ; "); logprobs.append(0.0)
    tokens += [f"<loc{y1:04d}>", f"<loc{x1:04d}>", f"<loc{y2:04d}>", f"<loc{x2:04d}>", f" {label}"]
    logprobs += [math.log(s)] * 5
  return tokens, logprobs


def random_box(rng):
  y1, x1 = rng.integers(0, 800, size=2)
  h, w = rng.integers(20, 220, size=2)
  return (int(y1), int(x1), int(min(y1 + h, 1023)), int(min(x1 + w, 1023)))


def jitter(rng, box, amount):
  y1, x1, y2, x2 = (int(np.clip(v + rng.integers(-amount, amount + 1), 0, 1023)) for v in box)
  return (min(y1, y2), min(x1, x2), max(y1, y2), max(x1, x2))


def make_case(seed=0, n_images=8):
  """Random ground truth, and predictions that find, miss, shift and invent objects, with random scores."""
  rng = np.random.default_rng(seed)
  gts, preds = [], []
  for i in range(n_images):
    gt = [] if i == 0 else [(random_box(rng), CLASSES[rng.integers(3)]) for _ in range(rng.integers(1, 5))]
    pred = [(jitter(rng, b, 40), lab) for b, lab in gt if rng.random() < 0.8]
    pred += [(random_box(rng), CLASSES[rng.integers(3)]) for _ in range(rng.integers(0, 3))]
    gts.append(gt)
    preds.append((pred, list(rng.uniform(0.05, 0.99, size=len(pred)))))
  return gts, preds


def to_rows(gts, preds):
  refs, rows = [], []
  for i, (gt, (pred, scores)) in enumerate(zip(gts, preds)):
    refs.append({"image": f"img{i}.jpg", "prefix": PROMPT, "suffix": loc_text(gt)})
    tokens, logprobs = tokens_for(pred, scores)
    rows.append({"image": f"img{i}.jpg", "prefix": PROMPT, "prediction": loc_text(pred), "tokens": tokens,
                 "token_logprobs": logprobs})
  return refs, rows


def coco_direct(gts, preds, cat_ids=None):
  """COCOeval the standard way (loadRes), on the same quantised boxes and scores."""
  cats = {name: i + 1 for i, name in enumerate(CLASSES)}
  xywh = lambda b: [b[1] / 1023, b[0] / 1023, (b[3] - b[1]) / 1023, (b[2] - b[0]) / 1023]
  objects = [(i + 1, b, lab) for i, gt in enumerate(gts) for b, lab in gt]
  anns = [{"id": n + 1, "image_id": i, "category_id": cats[lab], "bbox": xywh(b), "area": xywh(b)[2] * xywh(b)[3],
           "iscrowd": 0} for n, (i, b, lab) in enumerate(objects)]
  gt_coco = COCO()
  gt_coco.dataset = {"images": [{"id": i + 1} for i in range(len(gts))], "annotations": anns,
                     "categories": [{"id": v, "name": k} for k, v in cats.items()]}
  dets = [{"image_id": i + 1, "category_id": cats[lab], "bbox": xywh(b), "score": float(s)}
          for i, (pred, scores) in enumerate(preds) for (b, lab), s in zip(pred, scores)]
  with contextlib.redirect_stdout(io.StringIO()):
    gt_coco.createIndex()
    ev = COCOeval(gt_coco, gt_coco.loadRes(dets), "bbox")
    if cat_ids is not None:
      ev.params.catIds = cat_ids
    ev.evaluate(); ev.accumulate(); ev.summarize()
  return ev.stats


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_equals_cocoeval_run_directly(seed):
  gts, preds = make_case(seed)
  refs, rows = to_rows(gts, preds)
  metrics, _ = score("detect", rows, refs)
  stats = coco_direct(gts, preds)
  assert stats[0] > 0  # the case is not degenerate
  for key, want in zip(("map", "map50", "map75"), stats[:3]):
    assert metrics[key] == pytest.approx(want, abs=1e-12), key
  for k, name in enumerate(CLASSES):
    if any(lab == name for gt in gts for _, lab in gt):
      assert metrics["per_class"][name]["ap"] == pytest.approx(coco_direct(gts, preds, [k + 1])[0], abs=1e-12)


def test_confidence_is_what_ranks_boxes():
  """Swapping the scores of a true and a false positive changes mAP exactly as COCOeval says."""
  gts = [[((100, 100, 300, 300), "cat")], [((500, 500, 700, 700), "cat")]]
  preds = [([((100, 100, 300, 300), "cat")], [0.9]), ([((10, 10, 50, 50), "cat")], [0.2])]
  swapped = [([((100, 100, 300, 300), "cat")], [0.2]), ([((10, 10, 50, 50), "cat")], [0.9])]
  results = []
  for p in (preds, swapped):
    metrics, _ = score("detect", *reversed(to_rows(gts, p)))
    assert metrics["map"] == pytest.approx(coco_direct(gts, p)[0], abs=1e-12)
    results.append(metrics["map"])
  assert results[0] > results[1]


def one(ref, pred, prefix="detect cat ; dog"):
  return score("detect", [{"image": "a.jpg", "prefix": prefix, "prediction": pred}],
               [{"image": "a.jpg", "prefix": prefix, "suffix": ref}])


CAT = "<loc0100><loc0100><loc0400><loc0400> cat"
DOG = "<loc0500><loc0500><loc0900><loc0900> dog"


def test_empty_prediction_is_all_misses():
  metrics, records = one(f"{CAT} ; {DOG}", "")
  assert metrics["empty_predictions"] == 1 and metrics["num_pred_boxes"] == 0
  assert metrics["recall"] == 0.0 and metrics["map"] == 0.0 and metrics["precision"] is None
  assert records[0]["score"] == 0.0


def test_extra_text_spoils_only_its_segment():
  metrics, records = one(f"{CAT} ; {DOG}", f"{CAT} ; here is a dog ; Sure: {DOG}")
  assert metrics["malformed_segments"] == 2
  assert [m["segment"] for m in records[0]["malformed"]] == ["here is a dog", f"Sure: {DOG}"]
  assert metrics["recall"] == 0.5 and metrics["precision"] == 1.0
  assert metrics["per_class"]["cat"]["ap"] == pytest.approx(1.0) and metrics["per_class"]["dog"]["ap"] == 0.0


def test_text_after_a_label_makes_an_unknown_class():
  metrics, _ = one(CAT, f"{CAT} and more")
  assert metrics["unknown_class_boxes"] == 1 and metrics["precision"] == 0.0 and metrics["recall"] == 0.0


def test_corners_out_of_order_are_rejected_as_misses():
  flipped = "<loc0400><loc0100><loc0100><loc0400> cat"  # y2 < y1
  boxes, bad = parse_detections(flipped)
  assert boxes == [] and "out of order" in bad[0].reason
  metrics, _ = one(CAT, flipped)
  assert metrics["malformed_segments"] == 1 and metrics["recall"] == 0.0 and metrics["map"] == 0.0


def test_duplicates_are_false_positives():
  metrics, records = one(CAT, f"{CAT} ; {CAT}")
  assert metrics["precision"] == 0.5 and metrics["recall"] == 1.0
  assert [b[-1] for b in records[0]["pred_boxes"]] == [True, False]  # the first copy matched
  gts = [[((100, 100, 400, 400), "cat")]]
  preds = [([((100, 100, 400, 400), "cat")] * 2, [1.0, 1.0])]
  assert metrics["map"] == pytest.approx(coco_direct(gts, preds)[0], abs=1e-12)


def test_unknown_class_counts_against_precision_not_map():
  base, _ = one(CAT, CAT)
  metrics, _ = one(CAT, f"{CAT} ; <loc0500><loc0500><loc0900><loc0900> zebra")
  assert metrics["unknown_class_boxes"] == 1 and "zebra" not in metrics["per_class"]
  assert metrics["map"] == base["map"] == pytest.approx(1.0)
  assert metrics["precision"] == 0.5 and base["precision"] == 1.0


def test_images_without_ground_truth():
  refs = [{"image": "a.jpg", "prefix": "detect cat", "suffix": CAT},
          {"image": "b.jpg", "prefix": "detect cat", "suffix": ""}]
  right = [{"image": "a.jpg", "prefix": "detect cat", "prediction": CAT},
           {"image": "b.jpg", "prefix": "detect cat", "prediction": ""}]
  metrics, records = score("detect", right, refs)
  assert metrics["map"] == pytest.approx(1.0) and [r["score"] for r in records] == [1.0, 1.0]
  wrong = [right[0], {**right[1], "prediction": CAT}]  # a box where there is nothing
  metrics, records = score("detect", wrong, refs)
  assert metrics["precision"] == 0.5 and records[1]["score"] == 0.0
  # No ground truth anywhere: mAP and recall are undefined, not zero.
  metrics, _ = score("detect", wrong[1:], refs[1:])
  assert metrics["map"] is None and metrics["recall"] is None and metrics["precision"] == 0.0


def test_round_trip_with_convert_encoding():
  rng = np.random.default_rng(3)
  width, height = 640, 427
  xs, ys = (np.sort(rng.uniform(0, 1, size=(5, 2)), axis=1) for _ in range(2))
  xyxy = np.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], axis=1) * [width, height, width, height]
  boxes, bad = parse_detections(boxes_to_loc_text(xyxy, ["a", "b c", "d", "e", "f"], width, height))
  assert not bad and [b.label for b in boxes] == ["a", "b c", "d", "e", "f"]
  got = np.array([[b.x1 * width, b.y1 * height, b.x2 * width, b.y2 * height] for b in boxes])
  half_bin = 0.5 / 1023 * np.array([width, height, width, height])
  assert np.all(np.abs(got - xyxy) <= half_bin + 1e-9)


def test_malformed_output_is_reported_with_its_line(tmp_path, caplog):
  refs = tmp_path / "refs.jsonl"
  preds = tmp_path / "preds.jsonl"
  refs.write_text("".join(json.dumps({"image": f"{i}.jpg", "prefix": "detect cat", "suffix": CAT}) + "\n" for i in range(3)))
  preds.write_text("".join(json.dumps({"image": f"{i}.jpg", "prefix": "detect cat", "prediction": p}) + "\n"
                           for i, p in enumerate([CAT, "<loc0100><loc0100> cat", CAT])))
  metrics, _ = score_files("detect", str(preds), str(refs))
  assert metrics["malformed"] == [{"line": 2, "image": "1.jpg", "prefix": "detect cat",
                                   "segment": "<loc0100><loc0100> cat", "reason": "has 2 <loc> tokens, needs 4 then a label"}]
  assert "line 2" in caplog.text


def test_unreadable_segments_past_the_first_few_are_one_log_line(tmp_path, caplog):
  # A base model writes dozens: the first MAX_LOGGED are logged, one line counts the rest, metrics.json lists them.
  n = scoring.MAX_LOGGED + 3
  refs = tmp_path / "refs.jsonl"
  preds = tmp_path / "preds.jsonl"
  refs.write_text("".join(json.dumps({"image": f"{i}.jpg", "prefix": "detect cat", "suffix": CAT}) + "\n"
                          for i in range(n)))
  preds.write_text("".join(json.dumps({"image": f"{i}.jpg", "prefix": "detect cat", "prediction": "cat cat"}) + "\n"
                           for i in range(n)))
  with caplog.at_level(logging.WARNING):
    metrics, _ = score_files("detect", str(preds), str(refs))
  assert len(metrics["malformed"]) == n
  lines = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
  assert len(lines) == scoring.MAX_LOGGED + 1, lines
  assert lines[-1].startswith("... and 3 more unreadable segments"), lines[-1]


def test_box_confidence_uses_only_the_box_tokens():
  pred = f"{CAT} ; {DOG}"
  tokens, logprobs = tokens_for([((100, 100, 400, 400), "cat"), ((500, 500, 900, 900), "dog")], [0.3, 0.7])
  logprobs[5] = -50.0  # the separator: must not lower either box
  _, records = score("detect", [{"image": "a", "prefix": "detect cat ; dog", "prediction": pred, "tokens": tokens,
                                 "token_logprobs": logprobs}], [{"image": "a", "prefix": "detect cat ; dog", "suffix": pred}])
  assert [b[5] for b in records[0]["pred_boxes"]] == pytest.approx([0.3, 0.7])
