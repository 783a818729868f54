"""The HTML report: self-contained, and in headless Chromium it shows the images with the boxes on them."""
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from components.evaluate import render_report, score, write_evaluation
from components.evaluate.report import GT_COLOUR, HEADER_BACKGROUND, PRED_COLOUR

IMAGE_RGB = (30, 60, 200)
GT = (200, 100, 700, 500)  # bins: y1, x1, y2, x2
PRED = (400, 450, 900, 950)


def loc(b, label):
  return "".join(f"<loc{v:04d}>" for v in b) + f" {label}"


def hex_rgb(colour):
  return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


def make_case(root):
  os.makedirs(root / "images")
  Image.new("RGB", (320, 240), IMAGE_RGB).save(root / "images" / "blue.png")
  Image.new("RGB", (320, 240), (200, 200, 200)).save(root / "images" / "grey.png")
  refs = [{"image": "images/blue.png", "prefix": "detect cat", "suffix": loc(GT, "cat")},
          {"image": "images/grey.png", "prefix": "detect cat", "suffix": loc(GT, "cat")}]
  preds = [{"image": "images/blue.png", "prefix": "detect cat", "prediction": loc(PRED, "cat")},
           {"image": "images/grey.png", "prefix": "detect cat", "prediction": loc(GT, "cat")}]
  return refs, preds


def chromium(args, tmp_path):
  exe = shutil.which("chromium") or shutil.which("chromium-browser")
  if exe is None:
    print("SKIP reason: Debian's chromium is not installed (apt-get install -y chromium)")
    pytest.skip("chromium not installed (apt-get install -y chromium); the report is not rendered")
  cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--force-device-scale-factor=1", f"--user-data-dir={tmp_path / 'chrome-profile'}", *args]
  return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=True)


def test_report_is_self_contained(tmp_path):
  refs, preds = make_case(tmp_path)
  metrics, records = score("detect", preds, refs)
  page = render_report(metrics, records, image_root=str(tmp_path))
  assert page.count("data:image/jpeg;base64,") == 2
  assert not re.search(r"""(src|href)\s*=\s*['"](?!data:)""", page)  # nothing fetched from anywhere
  assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page
  # worst first: the missed blue image before the perfect grey one
  assert page.index("images/blue.png") < page.index("images/grey.png")


def test_report_with_baseline_shows_both(tmp_path):
  refs, preds = make_case(tmp_path)
  base = tmp_path / "base"
  write_evaluation(str(base), "detect", [{**p, "prediction": ""} for p in preds], refs, image_root=str(tmp_path))
  out = tmp_path / "tuned"
  metrics = write_evaluation(str(out), "detect", preds, refs, image_root=str(tmp_path), baseline_dir=str(base))
  assert metrics["baseline"]["map"] == 0.0 and metrics["map"] > 0
  page = (out / "report.html").read_text()
  assert "<th>base</th><th>tuned</th><th>change</th>" in page
  assert page.count("<b>base</b>") == 2 and page.count("<b>tuned</b>") == 2


def find(pixels, rgb, tol):
  return np.all(np.abs(pixels.astype(int) - rgb) <= tol, axis=-1)


def near(mask, x, y, r=4):
  return mask[max(y - r, 0):y + r + 1, max(x - r, 0):x + r + 1].any()


def test_report_renders_images_and_boxes_in_chromium(tmp_path):
  refs, preds = make_case(tmp_path)
  metrics, records = score("detect", preds, refs)
  page = tmp_path / "report.html"
  page.write_text(render_report(metrics, records, image_root=str(tmp_path)))
  shot = tmp_path / "shot.png"
  chromium([f"--screenshot={shot}", "--window-size=1400,1400", page.as_uri()], tmp_path)
  pixels = np.asarray(Image.open(shot).convert("RGB"))

  # The blue picture is on the page: find its rectangle.
  blue = find(pixels, IMAGE_RGB, 12)
  ys, xs = np.nonzero(blue)
  assert len(ys) > 5000, "the inlined image is not visible"
  left, top, right, bottom = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
  assert (right - left) / (bottom - top) == pytest.approx(320 / 240, rel=0.03)

  def at(bins, corner):  # screen position of a box's corner (bins / 1023 of the picture)
    y, x = bins[corner[0]], bins[corner[1]]
    return int(left + x / 1023 * (right - left)), int(top + y / 1023 * (bottom - top))

  green, magenta = find(pixels, hex_rgb(GT_COLOUR), 40), find(pixels, hex_rgb(PRED_COLOUR), 40)
  for mask, box in ((green, GT), (magenta, PRED)):
    (x1, y1), (x2, y2) = at(box, (0, 1)), at(box, (2, 3))
    for x, y in (((x1 + x2) // 2, y1), ((x1 + x2) // 2, y2 - 1), (x1, (y1 + y2) // 2), (x2 - 1, (y1 + y2) // 2)):
      assert near(mask, x, y), f"no box edge at {(x, y)}"
    assert not near(mask, (x1 + x2) // 2, (y1 + y2) // 2, r=2)  # outlines, not filled
  assert not green[top:bottom, left:left + 5].any()  # nothing drawn where there is no box

  dom = chromium(["--dump-dom", page.as_uri()], tmp_path).stdout
  assert dom.count('class="card"') == 2 and 'id="gallery"' in dom
  assert dom.count('<rect class="gt"') == 2 and dom.count('<rect class="pred"') == 2


def test_summary_keeps_a_metric_that_became_null():
  page = render_report({"map": None, "map50": 0.5, "num_examples": 3}, [], image_root=None,
                       base_metrics={"map": 0.25, "map50": 0.125, "num_examples": 3})
  summary = page[page.index("<table id='summary'>"):]
  summary = summary[:summary.index("</table>")]
  assert "<tr><td>map</td><td>0.2500</td><td>–</td><td></td></tr>" in summary
  assert "<tr><td>map50</td><td>0.1250</td><td>0.5000</td>" in summary


HEADER = {"model": "paligemma2-3b-224", "checkpoint": "gs://b/runs/7 (best)", "run_id": "pg-run-20250101",
          "dataset": "gs://b/data/pets", "split": "valid", "date": "2025-01-01 12:00:00 UTC"}


def test_header_says_what_was_evaluated(tmp_path):
  refs, preds = make_case(tmp_path)
  metrics, records = score("detect", preds, refs)
  page = render_report(metrics, records, image_root=str(tmp_path), title="detect evaluation", header=HEADER)
  head = page[page.index("<header id='run'>"):page.index("</header>")]
  assert "<h1>detect evaluation</h1>" in head
  for field, label in (("model", "model"), ("checkpoint", "checkpoint"), ("run_id", "run id"),
                       ("dataset", "dataset"), ("split", "split"), ("date", "date")):
    assert f"<dt>{label}</dt><dd>{HEADER[field]}</dd>" in head
  assert "<dt>task</dt><dd>detect</dd>" in head
  # An unknown field shows as a dash, so that every report has the same header.
  bare = render_report(metrics, records, image_root=None, header={"model": "yolov8n"})
  assert "<dt>model</dt><dd>yolov8n</dd>" in bare and "<dt>run id</dt><dd>–</dd>" in bare


def test_write_evaluation_dates_the_report(tmp_path):
  refs, preds = make_case(tmp_path)
  write_evaluation(str(tmp_path / "out"), "detect", preds, refs, image_root=str(tmp_path),
                   header={"model": "m", "split": "valid"})
  page = (tmp_path / "out" / "report.html").read_text()
  assert re.search(r"<dt>date</dt><dd>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</dd>", page)


def test_report_uses_the_full_width_in_chromium(tmp_path):
  """At 1400 px the header spans the window and the two cards sit side by side (one per row used half)."""
  refs, preds = make_case(tmp_path)
  metrics, records = score("detect", preds, refs)
  page = tmp_path / "report.html"
  page.write_text(render_report(metrics, records, image_root=str(tmp_path), header=HEADER))
  shot = tmp_path / "shot.png"
  chromium([f"--screenshot={shot}", "--window-size=1400,1400", page.as_uri()], tmp_path)
  pixels = np.asarray(Image.open(shot).convert("RGB"))
  width = pixels.shape[1]
  band = find(pixels, hex_rgb(HEADER_BACKGROUND), 2)
  assert band[5].mean() > 0.95, "the header does not span the page"
  def picture(rgb, tol):  # the rectangle of an image: rows and columns with hundreds of its pixels
    mask = find(pixels, rgb, tol)
    rows, cols = np.nonzero(mask.sum(1) > 200)[0], np.nonzero(mask.sum(0) > 200)[0]
    return rows.min(), cols.min(), cols.max()

  (b_top, b_left, _), (g_top, _, g_right) = picture(IMAGE_RGB, 12), picture((200, 200, 200), 2)
  assert abs(int(b_top) - int(g_top)) < 40, "the two cards are not on one row"
  assert b_left < 0.1 * width and g_right > 0.85 * width, (b_left, g_right, width)
  dom = chromium(["--dump-dom", page.as_uri()], tmp_path).stdout
  assert "pg-run-20250101" in dom and "gs://b/runs/7 (best)" in dom


def test_segmentation_masks_render_semi_transparent_in_chromium(tmp_path):
  """Masks lie over the picture in the box colours at MASK_ALPHA: the picture shows through them."""
  from components import paligemma
  from components.evaluate.report import MASK_ALPHA
  from components.paligemma.segmentation import object_text

  refs, _ = make_case(tmp_path)
  codec = paligemma.init_vqvae(0, widths=(4, 8, 8, 8), dim=8)
  codes = np.arange(16) * 8
  assert (paligemma.decode_masks(codec, codes[None]) > 0).all()  # each mask fills its box
  text = lambda bins: object_text(np.asarray(bins) / 1023, codes, "cat")
  refs = [{**refs[0], "prefix": "segment cat", "suffix": text(GT), "width": 320, "height": 240}]
  preds = [{"image": refs[0]["image"], "prefix": "segment cat", "prediction": text(PRED)}]
  metrics, records = score("segment", preds, refs, vqvae=codec)
  page = tmp_path / "report.html"
  page.write_text(render_report(metrics, records, image_root=str(tmp_path)))
  shot = tmp_path / "shot.png"
  chromium([f"--screenshot={shot}", "--window-size=1400,1400", page.as_uri()], tmp_path)
  pixels = np.asarray(Image.open(shot).convert("RGB"))
  ys, xs = np.nonzero(find(pixels, IMAGE_RGB, 12))  # the corners stay uncovered: the picture's extent
  left, top, right, bottom = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1

  def colour_at(y_bin, x_bin):
    return pixels[int(top + y_bin / 1023 * (bottom - top)), int(left + x_bin / 1023 * (right - left))].astype(int)

  def over(*layers):  # the picture's colour seen through the mask layers, bottom first
    colour = np.asarray(IMAGE_RGB, float)
    for layer in layers:
      colour = colour * (1 - MASK_ALPHA / 255) + np.asarray(layer) * (MASK_ALPHA / 255)
    return colour
  assert np.abs(colour_at(300, 250) - over(hex_rgb(GT_COLOUR))).max() <= 12  # ground truth only
  assert np.abs(colour_at(800, 700) - over(hex_rgb(PRED_COLOUR))).max() <= 12  # prediction only
  assert np.abs(colour_at(550, 475) - over(hex_rgb(GT_COLOUR), hex_rgb(PRED_COLOUR))).max() <= 12  # both
  assert np.abs(colour_at(950, 50) - IMAGE_RGB).max() <= 12  # neither
