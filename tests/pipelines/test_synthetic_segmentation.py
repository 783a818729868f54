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
