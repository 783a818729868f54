"""The segmentation text: masks -> `<loc>`×4 `<seg>`×16 as big_vision's op writes it, and back to masks."""
import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from components import paligemma
from components.common.locations import to_bins
from components.convert import boxes_to_loc_text
from components.paligemma import segmentation

UNSEEN = pathlib.Path(__file__).parent / "data" / "segmentation_unseen.npz"


@pytest.fixture(scope="module")
def released(bigvision_fixtures):
  folder = bigvision_fixtures / "segmentation"
  with open(folder / "full_masks.json") as f:
    meta = json.load(f)
  with np.load(folder / "full_masks.npz") as f:
    full = dict(f)
  masks = [full[f"mask{i}"] for i in range(len(meta["boxes"]))]
  return paligemma.load_vqvae(folder / "vqvae.npz"), masks, meta["boxes"], meta["suffixes"], full["resized64"]


@pytest.fixture(scope="module")
def unseen():
  """big_vision's op and decoder on a codec of other widths/D (fitted: its codes vary) and other masks
  (made by data/make_segmentation_unseen.py)."""
  with np.load(UNSEEN) as f:
    data = dict(f)
  vqvae = {k[len("vqvae/"):]: v for k, v in data.items() if k.startswith("vqvae/")}
  paligemma.vqvae.check_vqvae(vqvae, str(UNSEEN))
  return vqvae, [data[f"mask{i}"] for i in range(len(data["boxes"]))], data


def seg_tokens(suffix):
  return suffix[36:].split(">")[:-1]


def test_mask_to_suffix_equals_big_vision_on_full_masks(released):
  vqvae, masks, boxes, suffixes, resized64 = released
  for mask, box, want, crop in zip(masks, boxes, suffixes, resized64):
    np.testing.assert_allclose(segmentation.crop_resize_mask(mask, box), crop, rtol=0, atol=1e-6)
    assert paligemma.mask_to_suffix(mask, box, vqvae) == want
    assert paligemma.mask_to_suffix(mask > 0, box, vqvae) == want  # bool masks read as 0/255


def test_loc_tokens_follow_the_detect_rounding(released):
  vqvae, masks, boxes, _, _ = released
  for mask, (y1, x1, y2, x2) in zip(masks, boxes):
    h, w = mask.shape
    detect = boxes_to_loc_text([[x1 * w, y1 * h, x2 * w, y2 * h]], ["x"], w, h)
    assert paligemma.mask_to_suffix(mask, (y1, x1, y2, x2), vqvae)[:36] == detect[:36]


def test_unseen_codec_and_masks_match_big_vision(unseen):
  """Other widths (4-8-8-16, D = 8), 40 other masks, a third of them with loose boxes: the whole suffix is
  big_vision's. A `<seg>` token could differ only where big_vision's nearest and second-nearest codes are
  within the resize's float error (~1e-7 relative) of each other; the closest pair here is 1.8e-4 apart,
  so none may differ (and none did on 2000 further masks and three codecs: see the data script)."""
  vqvae, masks, data = unseen
  assert vqvae["_vq_vae._embedding"].shape == (128, 8) and data["index_margin"].min() > 1e-4
  for mask, box, want, crop, margin in zip(masks, data["boxes"], data["suffixes"], data["resized64"],
                                           data["index_margin"]):
    np.testing.assert_allclose(segmentation.crop_resize_mask(mask, box), crop, rtol=0, atol=1e-6)
    got = paligemma.mask_to_suffix(mask, box, vqvae)
    assert got[:36] == want[:36]
    assert seg_tokens(got) == seg_tokens(want), f"margins {margin}"
    # and our encoder on big_vision's own 64×64 crop gives big_vision's codes
    np.testing.assert_array_equal(paligemma.encode_masks(vqvae, crop[None])[0], [int(t[4:]) for t in seg_tokens(want)])
  assert len({t for s in data["suffixes"] for t in seg_tokens(s)}) > 20  # the codes vary: a real test


def test_unseen_decoder_matches_big_vision(unseen):
  vqvae, _, data = unseen
  """The fitted decoder's logits reach ~50, where float32 steps are 4e-6: summation order (our sub-pixel
  transposed conv, Flax's dilated one) moves them by a few ulps, hence a relative bound there."""
  got = paligemma.decode_masks(vqvae, data["probe_codes"])
  want = data["probe_decoded"]
  assert np.abs(want).max() > 10
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)
  assert np.array_equal(got > 0, want > 0)


def big_vision_paste(mask64, bins, height, width):
  """The lines of big_vision's segmentation evaluator that paste a decoded mask (transcribed)."""
  y1, x1, y2, x2 = np.asarray(bins) / 1023
  y1, x1, y2, x2 = map(int, (y1 * height, x1 * width, y2 * height, x2 * width))
  mi = np.asarray(Image.fromarray(mask64).resize([x2 - x1, y2 - y1], resample=Image.BILINEAR)) > 0.0
  full = np.zeros((height, width), bool)
  full[y1:y2, x1:x2] = mi
  return full


def test_suffix_to_masks_recovers_the_codec_reconstruction(unseen):
  vqvae, masks, data = unseen
  for mask, box in list(zip(masks, data["boxes"]))[:8]:
    h, w = mask.shape
    suffix = paligemma.mask_to_suffix(mask, box, vqvae, label="thing")
    parsed = paligemma.suffix_to_masks(suffix, h, w, vqvae)
    assert not parsed.malformed and len(parsed.objects) == 1
    obj = parsed.objects[0]
    codes = paligemma.encode_masks(vqvae, segmentation.crop_resize_mask(mask, box)[None])[0]
    np.testing.assert_array_equal(obj.codes, codes)
    bins = to_bins(box)
    assert obj.label == "thing" and obj.loc_bins == tuple(bins)
    np.testing.assert_allclose(obj.box, bins / 1023)
    want = big_vision_paste(paligemma.decode_masks(vqvae, codes[None])[0], bins, h, w)
    assert obj.mask.shape == (h, w) and obj.mask.dtype == bool and np.array_equal(obj.mask, want)
    # and the reconstruction resembles the mask (a fitted codec): IoU well above chance
    assert (obj.mask & (mask > 0)).sum() / (obj.mask | (mask > 0)).sum() > 0.5


def test_several_objects_in_one_call(unseen):
  vqvae, masks, data = unseen
  pairs = list(zip(masks, data["boxes"]))[:3]
  joined = segmentation.masks_to_suffix([m for m, _ in pairs], [b for _, b in pairs], vqvae, ["a", None, "b c"])
  singles = [paligemma.mask_to_suffix(m, b, vqvae, label) for (m, b), label in zip(pairs, ["a", None, "b c"])]
  assert joined == " ; ".join(singles)
  assert segmentation.masks_to_suffix([], [], vqvae) == ""


SEG16 = "".join(f"<seg{i:03d}>" for i in range(16))


@pytest.mark.parametrize("segment, reason", [
    ("<loc0100><loc0100><loc0500>" + SEG16, "opens with 3 <loc> tokens"),
    ("<loc0100><loc0100><loc0500><loc0500><loc0500>" + SEG16, "opens with 5 <loc> tokens"),
    ("<loc0100><loc0100><loc0500><loc0500>" + SEG16[:9 * 8] + " cat", "has 9 <seg> tokens after the box"),
    ("<loc0100><loc0100><loc0500><loc0500> cat", "has 0 <seg> tokens after the box"),
    ("<loc0100><loc0100><loc0500><loc0500>" + SEG16 + "<seg001> cat", "has 17 <seg> tokens"),
    ("<loc0100><loc0100><loc0500><loc0500>" + SEG16 + " cat<seg001>", "stray <loc>/<seg> tokens"),
    ("<loc0100><loc0100><loc0500><loc0500>" + SEG16.replace("<seg005>", "<seg200>"), "outside <seg000>..<seg127>"),
    ("<loc0100><loc0100><loc0500><loc1500>" + SEG16, "outside <loc0000>..<loc1023>"),
    ("<loc0500><loc0100><loc0500><loc0500>" + SEG16, "empty or inverted box"),
    ("<loc0100><loc0600><loc0500><loc0500>" + SEG16, "empty or inverted box"),
    ("cat <loc0100><loc0100><loc0500><loc0500>" + SEG16, "opens with 0 <loc> tokens"),
])
def test_malformed_segments_are_reported_and_the_rest_kept(unseen, segment, reason):
  vqvae, _, _ = unseen
  good = "<loc0010><loc0020><loc0900><loc0800>" + "".join(f"<seg{i:03d}>" for i in range(100, 116)) + " dog"
  text = f"{good} ; {segment} ; {good}"
  parsed = paligemma.suffix_to_masks(text, 30, 40, vqvae)
  assert [(m.segment, reason in m.reason) for m in parsed.malformed] == [(segment, True)], parsed.malformed
  assert len(parsed.objects) == 2 and all(o.label == "dog" and o.mask.shape == (30, 40) for o in parsed.objects)
  assert [text[o.start:o.end] for o in parsed.objects] == [good, good]
  np.testing.assert_array_equal(parsed.objects[1].codes, np.arange(100, 116))


def test_answers_without_objects(unseen):
  vqvae, _, _ = unseen
  for text in ("", " ; ", "no objects here"):
    parsed = paligemma.suffix_to_masks(text, 10, 10, vqvae)
    assert parsed.objects == [] and len(parsed.malformed) == (text == "no objects here")
  # whitespace between tokens is tolerated, a trailing ';' ignored
  spaced = "<loc0000> <loc0000> <loc1023> <loc1023> " + " ".join(f"<seg{i:03d}>" for i in range(16)) + " cat ;"
  parsed = paligemma.parse_segments(spaced)
  assert not parsed.malformed and parsed.objects[0].label == "cat" and parsed.objects[0].mask is None
  assert parsed.objects[0].box == (0.0, 0.0, 1.0, 1.0)


def test_paste_of_a_box_smaller_than_a_pixel_is_empty():
  mask64 = np.ones((64, 64), np.float32)
  assert not segmentation.paste_mask(mask64, (0.5, 0.5, 0.501, 0.9), 100, 100).any()
  whole = segmentation.paste_mask(mask64, (0.0, 0.0, 1.0, 1.0), 7, 9)
  assert whole.all() and whole.shape == (7, 9)


def test_mask_box_and_bad_inputs(released):
  vqvae, _, _, _, _ = released
  mask = np.zeros((10, 20), bool)
  mask[2:5, 3:11] = True
  np.testing.assert_allclose(segmentation.mask_box(mask), [0.2, 0.15, 0.5, 0.55])
  crop = segmentation.crop_resize_mask(mask, segmentation.mask_box(mask))
  assert crop.shape == (64, 64) and crop.min() == pytest.approx(1.0)  # the tight box is all foreground
  with pytest.raises(ValueError, match="empty"):
    segmentation.mask_box(np.zeros((4, 4), bool))
  with pytest.raises(ValueError, match="covers no pixel of the 10×20 mask"):
    paligemma.mask_to_suffix(mask, (0.5, 0.5, 0.52, 0.9), vqvae)
  with pytest.raises(ValueError, match="only 0 and 1; pass it as bool"):
    paligemma.mask_to_suffix(mask.astype(np.uint8), (0.2, 0.15, 0.5, 0.55), vqvae)
  with pytest.raises(ValueError, match="bool or uint8"):
    paligemma.mask_to_suffix(mask.astype(np.float32), (0.2, 0.15, 0.5, 0.55), vqvae)
  with pytest.raises(ValueError, match="label 'a ; b'"):
    paligemma.mask_to_suffix(mask, (0.2, 0.15, 0.5, 0.55), vqvae, label="a ; b")
