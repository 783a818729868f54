"""Segmentation metrics: hand-checked miou / box accuracy / token accuracy / ceiling, mask mAP = pycocotools."""
import contextlib
import io

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from components import paligemma
from components.evaluate import segmentation as seg
from components.paligemma.segmentation import MalformedSegment, SegObject

H, W = 10, 10


def rect(y1, x1, y2, x2, *, label="", codes=None, size=(H, W)):
  """An object whose mask fills pixel rows y1:y2, columns x1:x2 and whose box is exactly that."""
  mask = np.zeros(size, bool)
  mask[y1:y2, x1:x2] = True
  h, w = size
  return SegObject((y1 / h, x1 / w, y2 / h, x2 / w), None if codes is None else np.asarray(codes), label, 0, 0, mask)


CODES = np.arange(16)


def test_hand_checked_metrics():
  a_ref = rect(0, 0, 5, 5, codes=CODES)
  a_pred = rect(0, 0, 5, 3, codes=np.r_[CODES[:12], [99] * 4])  # mask IoU 15/25, box IoU 0.6, 12 tokens
  a_decoded = rect(0, 0, 5, 4)  # the codec's own version of a_ref: IoU 20/25
  b_refs = [rect(0, 0, 4, 4, codes=CODES), rect(5, 5, 10, 10, codes=CODES)]
  b_preds = [rect(5, 5, 10, 10, codes=CODES), rect(0, 0, 4, 4, label="dog", codes=CODES)]  # "dog": no match
  examples = [
      seg.SegExample([a_pred], [a_ref], [a_decoded], label="cat"),
      seg.SegExample(b_preds, b_refs, b_refs, malformed=[MalformedSegment("<loc0001>", "x")] * 2, label="cat"),
      seg.SegExample([], [], None, malformed=[MalformedSegment("junk", "x")], label="cat"),
      seg.SegExample([], [rect(2, 2, 6, 6, codes=CODES)], None, label="cat", empty=True),
  ]
  metrics, records = seg.segmentation_metrics(examples)
  assert metrics["miou"] == pytest.approx((0.6 + 0 + 1 + 0) / 4)
  assert metrics["box_acc50"] == pytest.approx(2 / 4) and metrics["box_acc75"] == pytest.approx(1 / 4)
  assert metrics["seg_token_acc"] == pytest.approx((12 + 0 + 16 + 0) / 64)
  assert metrics["miou_ceiling"] == pytest.approx((0.8 + 1 + 1) / 3)  # examples with a decoded reference
  assert {k: metrics[k] for k in ("num_examples", "num_gt_objects", "num_pred_objects", "malformed_segments",
                                  "invalid_predictions", "empty_predictions", "unknown_class_objects")} == {
      "num_examples": 4, "num_gt_objects": 4, "num_pred_objects": 3, "malformed_segments": 3,
      "invalid_predictions": 1, "empty_predictions": 1, "unknown_class_objects": 1}
  assert [r["score"] for r in records] == pytest.approx([0.6, 0.5, 1.0, 0.0])
  assert records[1]["matches"] == [{"prediction": 0, "reference": 1, "box_iou": 1.0, "mask_iou": 1.0}]


def test_matching_maximises_total_box_iou():
  refs = [rect(0, 0, 10, 10, size=(20, 20)), rect(0, 8, 10, 18, size=(20, 20))]
  preds = [rect(0, 2, 10, 12, size=(20, 20)), rect(0, 0, 10, 9, size=(20, 20))]
  # Greedy in prediction order would pair 0-0 (IoU 0.67) and 1-1 (0.05); the best total pairs 1-0 and 0-1.
  pairs = seg.match_objects(preds, refs)
  assert [(i, j) for i, j, _ in pairs] == [(0, 1), (1, 0)]
  assert [iou for *_, iou in pairs] == pytest.approx([0.4 / 1.6, 0.9])


def test_box_iou_is_big_visions():
  assert seg.box_iou((0, 0, 0.5, 0.5), (0, 0, 0.5, 0.3)) == pytest.approx(0.6)
  assert seg.box_iou((0, 0, 0.2, 0.2), (0.5, 0.5, 1, 1)) == 0.0
  assert seg.box_iou((0.1, 0.1, 0.1, 0.5), (0.1, 0.1, 0.1, 0.5)) == 0.0  # empty boxes


def test_no_references_at_all():
  metrics, _ = seg.segmentation_metrics([seg.SegExample([rect(0, 0, 3, 3)], [], [], label="cat")])
  assert metrics["miou"] is None and metrics["mask_map"] is None and metrics["seg_token_acc"] is None
  assert metrics["box_acc50"] is None and metrics["miou_ceiling"] is None


def test_from_text_prediction_equal_to_reference_scores_the_ceiling():
  vqvae = paligemma.init_vqvae(0, widths=(4, 8, 8, 8), dim=8)
  image = np.zeros((40, 50), bool)
  image[5:30, 10:45] = True
  box = paligemma.segmentation.mask_box(image)
  reference = paligemma.mask_to_suffix(image, box, vqvae, "cat")
  ex = seg.example_from_text(reference, reference, 40, 50, vqvae, reference_masks=[image], label="cat")
  metrics, _ = seg.segmentation_metrics([ex])
  assert metrics["seg_token_acc"] == 1.0 and metrics["box_acc75"] == 1.0
  assert metrics["miou"] == pytest.approx(metrics["miou_ceiling"])
  assert metrics["miou"] == pytest.approx(seg.mask_iou(ex.reference_decoded[0].mask, image))
  # without ground-truth masks the decoded reference is the truth: the ceiling is 1
  alone, _ = seg.segmentation_metrics([seg.example_from_text("", reference, 40, 50, vqvae, label="cat")])
  assert alone["miou_ceiling"] == 1.0 and alone["miou"] == 0.0 and alone["empty_predictions"] == 1
  with pytest.raises(ValueError, match="2 reference masks for the 1 objects"):
    seg.example_from_text("", reference, 40, 50, vqvae, reference_masks=[image, image])
  with pytest.raises(ValueError, match="unreadable objects"):
    seg.example_from_text("", reference[:-40], 40, 50, vqvae)


# ------------------------------------------------------------------------------- mask mAP = pycocotools

def random_examples(seed, *, n=6, predictions=True, extra_class=False, duplicates=False, drop_class=None):
  rng = np.random.default_rng(seed)
  size = (32, 40)
  examples = []
  for _ in range(n):
    refs = []
    for _ in range(int(rng.integers(0, 4))):
      y, x = rng.integers(0, 20), rng.integers(0, 28)
      refs.append(rect(y, x, y + int(rng.integers(3, 12)), x + int(rng.integers(3, 12)),
                       label=str(rng.choice(["a", "b"])), size=size))
    refs = [r for r in refs if r.label != drop_class]
    preds, scores = [], []
    if predictions:
      for r in refs:
        if rng.random() < 0.8:  # a jittered copy
          y1, x1, y2, x2 = (int(round(v * s)) for v, s in zip(r.box, size * 2))
          dy, dx = rng.integers(-2, 3, 2)
          preds.append(rect(max(y1 + dy, 0), max(x1 + dx, 0), y2 + dy, x2 + dx, label=r.label, size=size))
          scores.append(float(rng.random()))
          if duplicates:
            preds.append(preds[-1])
            scores.append(float(rng.random()))
      for _ in range(int(rng.integers(0, 3))):  # false positives
        y, x = rng.integers(0, 25), rng.integers(0, 30)
        label = "c" if extra_class and rng.random() < 0.5 else str(rng.choice(["a", "b"]))
        preds.append(rect(y, x, y + 6, x + 8, label=label, size=size))
        scores.append(float(rng.random()))
    examples.append(seg.SegExample(preds, refs, None, scores=scores))
  return examples


def pycocotools_map(examples):
  """The textbook use: ground truth as a COCO dataset with RLE masks, predictions through loadRes."""
  labels = sorted({r.label for ex in examples for r in ex.references})
  category = {name: i + 1 for i, name in enumerate(labels)}
  images = [{"id": i + 1, "height": 32, "width": 40} for i in range(len(examples))]
  anns, results = [], []
  for image_id, ex in enumerate(examples, start=1):
    for r in ex.references:
      rle = mask_utils.encode(np.asfortranarray(r.mask.astype(np.uint8)))
      anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": category[r.label], "iscrowd": 0,
                   "segmentation": rle, "area": float(mask_utils.area(rle)), "bbox": list(mask_utils.toBbox(rle))})
    for p, score in zip(ex.predictions, ex.scores):
      results.append({"image_id": image_id, "category_id": category.get(p.label, 1000), "score": score,
                      "segmentation": mask_utils.encode(np.asfortranarray(p.mask.astype(np.uint8)))})
  with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": i, "name": n} for n, i in category.items()]}
    gt.createIndex()
    if results:
      dt = gt.loadRes(results)
    else:
      dt = COCO()
      dt.dataset = {"images": images, "annotations": [], "categories": gt.dataset["categories"]}
      dt.createIndex()
    evaluator = COCOeval(gt, dt, iouType="segm")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  return evaluator.stats[0], evaluator.stats[1]


@pytest.mark.parametrize("case", [
    dict(seed=0), dict(seed=1, n=12), dict(seed=2, predictions=False), dict(seed=3, extra_class=True),
    dict(seed=4, duplicates=True), dict(seed=5, drop_class="b", extra_class=True),
])
def test_mask_map_equals_pycocotools(case):
  examples = random_examples(**case)
  assert sum(len(ex.references) for ex in examples) > 0
  map_all, map50 = pycocotools_map(examples)
  metrics, _ = seg.segmentation_metrics(examples)
  assert metrics["mask_map"] == pytest.approx(map_all, abs=1e-9)
  assert metrics["mask_map50"] == pytest.approx(map50, abs=1e-9)
  if not case.get("predictions", True):
    assert metrics["mask_map"] == 0.0
  else:
    assert 0 < metrics["mask_map"] < 1  # a real ranking, not a degenerate 0 or 1


def test_perfect_predictions_score_one_and_duplicates_cost():
  examples = random_examples(6, predictions=False)
  perfect = [seg.SegExample(list(ex.references), ex.references, None) for ex in examples]
  assert seg.segmentation_metrics(perfect)[0]["mask_map"] == pytest.approx(1.0)
  doubled = [seg.SegExample(list(ex.references) * 2, ex.references, None,
                            scores=[1.0] * len(ex.references) + [0.5] * len(ex.references)) for ex in examples]
  assert seg.segmentation_metrics(doubled)[0]["mask_map"] == pytest.approx(1.0)  # lower-scored copies rank last
  metrics, _ = seg.segmentation_metrics(doubled)
  assert metrics["miou"] == 1.0 and metrics["num_pred_objects"] == 2 * metrics["num_gt_objects"]
