"""The synthetic instance masks (segmentation demo, codec fitting): visible masks, occlusion, crops."""
import numpy as np

from pipelines import synthetic


def test_instances_are_visible_disjoint_and_drawn():
  rng = np.random.default_rng(0)
  seen = set()
  for _ in range(30):
    image, objects = synthetic.segmentation_image(rng, 64)
    pixels = np.asarray(image).astype(int)
    assert image.size == (64, 64) and 1 <= len(objects) <= 3
    union = np.zeros((64, 64), int)
    lefts = []
    for label, mask in objects:
      assert label in synthetic.SEGMENT_CLASSES and mask.shape == (64, 64) and mask.dtype == bool
      assert mask.sum() > 0
      union += mask
      lefts.append(np.flatnonzero(mask.any(axis=0))[0])
      # the visible part shows the class's colour (jittered by at most 25 per channel)
      colour = np.array(synthetic._SEGMENT_COLORS[label])
      assert np.abs(np.median(pixels[mask], axis=0) - colour).max() <= 25
      seen.add(label)
    assert union.max() == 1  # a pixel belongs to one object: later shapes occlude earlier ones
    assert lefts == sorted(lefts)
  assert seen == set(synthetic.SEGMENT_CLASSES)


def test_same_seed_same_images():
  a = synthetic.segmentation_image(np.random.default_rng(5), 48)
  b = synthetic.segmentation_image(np.random.default_rng(5), 48)
  assert np.array_equal(np.asarray(a[0]), np.asarray(b[0]))
  assert [(c, m.tobytes()) for c, m in a[1]] == [(c, m.tobytes()) for c, m in b[1]]


def test_masks64_are_the_codec_crops():
  crops = synthetic.segmentation_masks64(50, seed=2)
  assert crops.shape == (50, 64, 64) and crops.dtype == np.float32
  assert crops.min() >= 0 and crops.max() <= 1 + 1e-6
  # each crop is a mask cropped to its own box: every border row and column touches the object
  assert (crops[:, 0, :].max(axis=1) > 0.5).all() and (crops[:, :, -1].max(axis=1) > 0.5).all()
  # shapes differ in aspect and occlusion: crops are not all alike
  assert len({round(float(c.mean()), 2) for c in crops}) > 20


def test_segmentation_dataset_is_a_coco_export_convert_reads(tmp_path):
  """The written COCO export: one annotation per visible instance (RLE, bbox, area of its mask); converted with
  --task segment, every instance reaches a `segment <class>` row whose reference mask is the drawn one."""
  import json

  from pycocotools import mask as mask_utils

  from components.convert import ConvertConfig, convert
  from components.paligemma import init_vqvae, save_vqvae

  root = synthetic.make_segmentation_dataset(str(tmp_path / "src"), train=5, valid=2, image_size=48, seed=3)
  rng = np.random.default_rng(3)  # the same draws, in the same order
  expected = {split: [synthetic.segmentation_image(rng, 48)[1] for _ in range(n)] for split, n in (("train", 5),
                                                                                                   ("valid", 2))}
  for split, images in expected.items():
    with open(f"{root}/{split}/_annotations.coco.json") as f:
      coco = json.load(f)
    anns = coco["annotations"]
    assert len(coco["images"]) == len(images) and len(anns) == sum(len(objects) for objects in images)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    got = [(a["image_id"], names[a["category_id"]], mask_utils.decode(
        {"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()}).astype(bool)) for a in anns]
    want = [(i, label, mask) for i, objects in enumerate(images) for label, mask in objects]
    assert [(i, label) for i, label, _ in got] == [(i, label) for i, label, _ in want]
    assert all(np.array_equal(g, w) for (_, _, g), (_, _, w) in zip(got, want))
    assert all(a["area"] == int(m.sum()) and a["bbox"][2] > 0 for a, (_, _, m) in zip(anns, want))

  codec = tmp_path / "codec.npz"
  save_vqvae(init_vqvae(0, widths=(4, 8, 16, 32), dim=16), str(codec))
  report = convert(ConvertConfig(input=root, format="coco", task="segment", output=str(tmp_path / "out"),
                                 vqvae=str(codec), workers=1, progress=False, image_format="png"))
  assert report["rejected"] == [] and report["repaired"] == []
  rows = [json.loads(line) for split in ("train", "valid") for line in open(tmp_path / "out" / f"{split}.jsonl")]
  assert sum(len(r["masks"]) for r in rows) == sum(len(o) for images in expected.values() for o in images)
  assert all(r["prefix"] == "segment " + r["masks"][0]["label"] for r in rows)
  for r in rows:
    split, name = r["source_image"].split("/")
    drawn = [m for label, m in expected[split][int(name[len(split) + 1:-4])] if r["prefix"] == f"segment {label}"]
    written = [mask_utils.decode({"size": m["rle"]["size"], "counts": m["rle"]["counts"].encode()}).astype(bool)
               for m in r["masks"]]
    assert len(written) == len(drawn) and all(np.array_equal(a, b) for a, b in zip(written, drawn))


def test_converted_reference_masks_are_what_evaluate_scores(tmp_path, capsys):
  """convert --task segment -> evaluate score --task segment: the reference answers themselves as predictions
  reproduce every token and score the codec's own ceiling; mask mAP is measured against the `masks` convert
  wrote (full resolution), so it is below 1 exactly where the codec loses detail."""
  import json

  from components.convert import ConvertConfig, convert
  from components.evaluate.__main__ import main
  from components.paligemma import init_vqvae, save_vqvae

  root = synthetic.make_segmentation_dataset(str(tmp_path / "src"), train=0, valid=4, image_size=48, seed=4)
  codec = tmp_path / "codec.npz"
  save_vqvae(init_vqvae(0, widths=(4, 8, 16, 32), dim=16), str(codec))
  convert(ConvertConfig(input=root, format="coco", task="segment", output=str(tmp_path / "data"), vqvae=str(codec),
                        workers=1, progress=False, image_format="png"))
  refs = [json.loads(line) for line in open(tmp_path / "data" / "valid.jsonl")]
  preds = tmp_path / "preds.jsonl"
  preds.write_text("".join(json.dumps({"image": r["image"], "prefix": r["prefix"], "prediction": r["suffix"]}) + "\n"
                           for r in refs))
  assert main(["score", "--task", "segment", "--predictions", str(preds), "--references",
               str(tmp_path / "data" / "valid.jsonl"), "--vqvae", str(codec), "--output", str(tmp_path / "out")]) == 0
  metrics = json.loads(capsys.readouterr().out)
  assert metrics["seg_token_acc"] == 1.0 and metrics["box_acc75"] == 1.0
  assert metrics["miou"] == metrics["miou_ceiling"] < 1.0  # a random codec: far from the drawn masks
