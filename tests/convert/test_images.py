"""Image hygiene: every mode to 8-bit RGB, EXIF orientation with boxes, bad files and paths refused."""
import os

import numpy as np
import pytest
from PIL import Image

from components.convert import images
from components.convert.rows import Obj, Row, RowError
from components.convert.worker import ImageOptions, Task, run_task


def _load(path, **kw):
  image, orientation, stored, notes = images.load_rgb(str(path), kw.get("max_pixels", images.DEFAULT_MAX_PIXELS))
  return np.asarray(image), orientation, stored, notes


@pytest.mark.parametrize("maker, name, expected", [
    ("grey", "g.jpg", (128, 128, 128)),
    ("grey", "g.png", (128, 128, 128)),
    ("cmyk", "c.jpg", (255, 0, 0)),
    ("palette", "p.png", (0, 0, 255)),
])
def test_modes_become_8bit_rgb(tmp_path, imgs, maker, name, expected):
  path = getattr(imgs, maker)(str(tmp_path / name))
  pixels, _, _, notes = _load(path)
  assert pixels.dtype == np.uint8 and pixels.shape[-1] == 3
  np.testing.assert_allclose(pixels[5, 25], expected, atol=3)
  assert notes and "RGB" in notes[0]


def test_rgba_is_composited_on_white(tmp_path, imgs):
  pixels, _, _, notes = _load(imgs.rgba(str(tmp_path / "a.png")))
  np.testing.assert_array_equal(pixels[5, 5], (255, 0, 0))  # opaque red stays red
  np.testing.assert_array_equal(pixels[5, 35], (255, 255, 255))  # transparent becomes white, not black
  assert "white" in notes[0]


@pytest.mark.parametrize("value", [65535, 32896, 0])
def test_16bit_is_scaled_not_clipped(tmp_path, imgs, value):
  path = imgs.sixteen_bit(str(tmp_path / "s.png"), value=value)
  assert Image.open(path).mode.startswith("I")
  pixels, _, _, _ = _load(path)
  np.testing.assert_array_equal(pixels[0, 0], [round(value / 257)] * 3)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_moves_the_box_with_the_pixels(tmp_path, imgs, orientation):
  stored_box = (5, 10, 25, 20)  # x1, y1, x2, y2 of the black rectangle in the stored 60x40 grid
  imgs.exif_rotated(str(tmp_path / "e.jpg"), orientation, w=60, h=40, box=stored_box)
  row = Row("e.jpg", "ann", 1, objects=[Obj("thing", stored_box)])
  result = run_task(Task(str(tmp_path), "e.jpg", "images/e.png", [row]), str(tmp_path / "out"), ImageOptions(image_format="png"))
  assert result.error is None
  written = np.asarray(Image.open(tmp_path / "out" / "images" / "e.png"))
  assert written.shape[:2] == ((40, 60) if orientation <= 4 else (60, 40))
  x1, y1, x2, y2 = (int(v) for v in result.rows[0].objects[0]["box"])
  dark = np.argwhere(written.mean(-1) < 128)  # [K, (y, x)]
  assert (dark[:, 1].min(), dark[:, 0].min(), dark[:, 1].max() + 1, dark[:, 0].max() + 1) == (x1, y1, x2, y2)
  if orientation != 1:
    assert any("EXIF orientation" in n for n in result.image_notes)


def test_boxes_already_in_the_rotated_frame_are_not_rotated_twice(tmp_path, imgs):
  imgs.exif_rotated(str(tmp_path / "e.jpg"), 6, w=60, h=40, box=(5, 10, 25, 20))
  # The tool showed the upright 40x60 image, where the rectangle is at (20, 5)-(30, 25), and says so.
  row = Row("e.jpg", "ann", 1, objects=[Obj("t", (20, 5, 30, 25))], declared_size=(40, 60))
  result = run_task(Task(str(tmp_path), "e.jpg", "images/e.jpg", [row]), str(tmp_path / "out"), ImageOptions())
  assert result.rows[0].objects[0]["box"] == [20, 5, 30, 25]


@pytest.mark.parametrize("maker, message", [
    ("truncated", "corrupt or truncated"),
    ("empty", "empty"),
    ("text_file", "not an image"),
    ("bomb", "over the budget"),
])
def test_bad_files_are_refused_with_the_reason(tmp_path, imgs, maker, message):
  path = getattr(imgs, maker)(str(tmp_path / "bad.jpg"))
  with pytest.raises(RowError, match=message) as e:
    _load(path)
  assert "bad.jpg" in str(e.value)


def test_pixel_budget_is_configurable(tmp_path, imgs):
  path = imgs.rgb(str(tmp_path / "a.jpg"), 100, 100)
  with pytest.raises(RowError, match="100x100 pixels, over the budget of 5,000"):
    _load(path, max_pixels=5000)
  assert _load(path, max_pixels=10_000)[0].shape == (100, 100, 3)


def test_missing_file(tmp_path):
  with pytest.raises(RowError, match="does not exist"):
    _load(tmp_path / "nope.jpg")


def test_paths_escaping_the_root_are_refused(tmp_path, imgs):
  root = tmp_path / "root"
  root.mkdir()
  outside = imgs.rgb(str(tmp_path / "outside.jpg"))
  os.symlink(outside, root / "link.jpg")
  imgs.rgb(str(root / "inside.jpg"))
  os.symlink(root / "inside.jpg", root / "ok_link.jpg")
  for bad, why in [("../outside.jpg", "'..'"), (outside, "absolute"), ("link.jpg", "symlink"), ("a/../../outside.jpg", "'..'")]:
    with pytest.raises(RowError, match=why):
      images.resolve_inside(str(root), bad)
  assert images.resolve_inside(str(root), "ok_link.jpg") == str(root / "ok_link.jpg")


def test_downscale_keeps_aspect_and_never_enlarges():
  assert images.target_size((400, 100), 200) == (200, 50)
  assert images.target_size((400, 100), 1000) == (400, 100)
  assert images.target_size((400, 100), None) == (400, 100)


@pytest.mark.parametrize("orientation", [1, 6])
def test_reduced_jpeg_decoding_keeps_boxes_on_their_pixels(tmp_path, imgs, orientation):
  """With --max-side a JPEG is decoded at a reduced scale: the written image and box must still agree."""
  imgs.exif_rotated(str(tmp_path / "e.jpg"), orientation, w=800, h=400, box=(100, 40, 300, 200))
  row = Row("e.jpg", "ann", 1, objects=[Obj("thing", (100, 40, 300, 200))])
  result = run_task(Task(str(tmp_path), "e.jpg", "images/e.png", [row]), str(tmp_path / "out"),
                    ImageOptions(max_side=200, image_format="png"))
  written = np.asarray(Image.open(tmp_path / "out" / "images" / "e.png")).mean(-1)
  assert written.shape == ((100, 200) if orientation == 1 else (200, 100))
  # The source's own size as displayed: what another detector's pixel boxes of this image refer to.
  assert result.source_size == ((800, 400) if orientation == 1 else (400, 800))
  x1, y1, x2, y2 = result.rows[0].objects[0]["box"]
  inside = written[int(y1) + 1:int(y2) - 1, int(x1) + 1:int(x2) - 1]
  outside = written.copy()
  outside[max(0, int(y1) - 1):int(y2) + 1, max(0, int(x1) - 1):int(x2) + 1] = 255
  assert inside.max() < 60 and outside.min() > 200


def test_boxes_are_clipped_and_degenerate_boxes_dropped(tmp_path, imgs):
  imgs.rgb(str(tmp_path / "a.jpg"), 100, 50)
  objects = [Obj("in", (10, 10, 20, 20)), Obj("over", (90, 40, 120, 70)), Obj("flat", (5, 5, 5, 30)),
             Obj("outside", (200, 200, 300, 300)), Obj("nan", (float("nan"), 0, 1, 1)), Obj("reversed", (30, 30, 20, 40))]
  row = Row("a.jpg", "ann", 7, objects=objects)
  result = run_task(Task(str(tmp_path), "a.jpg", "images/a.jpg", [row]), str(tmp_path / "out"), ImageOptions(max_side=50))
  out = result.rows[0]
  # max_side=50 halves the image: boxes follow.
  assert out.objects == [{"label": "in", "box": [5.0, 5.0, 10.0, 10.0]}, {"label": "over", "box": [45.0, 20.0, 50.0, 25.0]}]
  assert out.suffix == "<loc0205><loc0102><loc0409><loc0205> in ; <loc0818><loc0921><loc1023><loc1023> over"
  assert len(out.repairs) == 5
  for label, why in [("over", "clipped"), ("flat", "dropped: zero"), ("outside", "dropped: entirely outside"),
                     ("nan", "dropped: not a finite"), ("reversed", "dropped: zero")]:
    assert any(f"'{label}'" in r and why in r for r in out.repairs), (label, out.repairs)


@pytest.mark.parametrize("mode, values, expected", [
    ("I", [0, 257 * 100, 65535], [0, 100, 255]),  # 32-bit int holding 16-bit data
    ("I", [0, 100, 255], [0, 100, 255]),  # 32-bit int holding 8-bit data
    ("F", [0.0, 0.5, 1.0], [0, 128, 255]),  # float in [0, 1]
])
def test_wide_integer_and_float_modes_are_scaled(mode, values, expected):
  image = Image.fromarray(np.array([values], np.int32 if mode == "I" else np.float32), mode)
  rgb, note = images._to_rgb(image)
  assert rgb.mode == "RGB" and note
  np.testing.assert_array_equal(np.asarray(rgb)[0, :, 0], expected)


def test_grey_with_alpha_is_composited_on_white():
  image = Image.fromarray(np.array([[[0, 255], [0, 0]]], np.uint8), "LA")  # black opaque, black transparent
  rgb, _ = images._to_rgb(image)
  np.testing.assert_array_equal(np.asarray(rgb)[0], [[0, 0, 0], [255, 255, 255]])
