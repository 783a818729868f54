"""The evaluation report: one self-contained HTML page (images inlined as data URIs, no network).

Sections: a header saying what was evaluated (model, checkpoint, run id, dataset and split, date), summary
metrics (base and tuned side by side when a baseline is given), the per-class table for detection, and a
gallery of examples, worst first, each with the image, ground-truth boxes (green) and predicted boxes
(magenta, dashed when unmatched at IoU 0.5) drawn as an SVG overlay in normalised coordinates, and the
prompt, references and answers underneath. For segmentation the masks are drawn too, semi-transparent in
the same colours (one PNG layer per side, at the thumbnail's resolution, stretched over the image). The
page uses the window's whole width: the gallery is a grid
of as many columns as fit.
"""
from __future__ import annotations

import base64
import html
import io
import logging
import os

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)
GT_COLOUR = "#00e000"
PRED_COLOUR = "#ff00ff"
# Which way is up, for colouring the base-vs-tuned change; counts not listed are shown uncoloured.
HIGHER_IS_BETTER = frozenset(("map", "map50", "map75", "precision", "recall", "f1", "cider", "bleu4", "accuracy",
                              "exact_match", "anls", "miou", "box_acc50", "box_acc75", "mask_map", "mask_map50",
                              "seg_token_acc"))
LOWER_IS_BETTER = frozenset(("cer", "malformed_segments", "unknown_class_boxes", "empty_predictions",
                             "invalid_predictions", "unknown_class_objects"))
THUMBNAIL_SIDE = 384  # px: enough to judge boxes, small enough that a 100-image page stays a few MB
MASK_ALPHA = 110  # of 255: the image stays readable under both sides' masks

HEADER_BACKGROUND = "#e8eef6"
HEADER_FIELDS = ("model", "checkpoint", "run_id", "dataset", "split", "date")  # render_report's `header` keys

_CSS = f"""
body {{ font-family: system-ui, sans-serif; margin: 0; color: #222; }}
main {{ padding: 0 24px 24px; }}
header {{ background: {HEADER_BACKGROUND}; padding: 12px 24px; border-bottom: 1px solid #c8d3e0; }}
header h1 {{ margin: 0 0 8px; font-size: 22px; }}
.meta {{ display: flex; flex-wrap: wrap; gap: 4px 28px; margin: 0; font-size: 14px; }}
.meta dt {{ display: inline; color: #556; }} .meta dd {{ display: inline; margin: 0 0 0 6px; font-weight: 600;
  word-break: break-all; }}
.tables {{ display: flex; flex-wrap: wrap; gap: 0 40px; align-items: flex-start; }}
table {{ border-collapse: collapse; margin: 8px 0 24px; }}
th, td {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
.better {{ color: #070; }} .worse {{ color: #b00; }}
.gallery {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 16px; }}
.card {{ border: 1px solid #ccc; border-radius: 6px; padding: 8px; min-width: 0; }}
.panels {{ display: flex; gap: 8px; }}
.panel {{ flex: 1 1 0; min-width: 0; }}
.frame {{ position: relative; width: 100%; line-height: 0; }}
.frame img {{ width: 100%; display: block; }}
.frame svg {{ position: absolute; left: 0; top: 0; width: 100%; height: 100%; }}
.tag {{ position: absolute; font-size: 11px; line-height: 13px; padding: 0 2px; color: #fff; white-space: nowrap; }}
.tag.gt {{ background: {GT_COLOUR}; transform: translateY(-100%); }}
.tag.pred {{ background: {PRED_COLOUR}; }}
.noimage {{ width: 100%; height: 60px; background: #eee; line-height: 60px; text-align: center; }}
.text {{ font-size: 13px; margin-top: 4px; word-break: break-word; }}
.label {{ color: #666; }}
.legend span {{ display: inline-block; padding: 0 6px; color: #fff; margin-right: 8px; }}
"""


def _fmt(v) -> str:
  return "–" if v is None else f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))


def _image_uri(path: str | None) -> str | None:
  if not path or not os.path.isfile(path):
    return None
  try:
    with Image.open(path) as im:
      im = im.convert("RGB")
      im.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
      buf = io.BytesIO()
      im.save(buf, format="JPEG", quality=85)
  except OSError as e:
    log.warning("report: cannot read image %s (%s); showing its card without the picture", path, e)
    return None
  return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _is_scalar_or_null(v) -> bool:
  return v is None or isinstance(v, (int, float)) and not isinstance(v, bool)


def _summary_table(metrics: dict, base: dict | None) -> str:
  """A row per metric that is a number on either side: one that became null (e.g. no class left to
  average over) is news, shown as "–", not left out."""
  base_values = base or {}
  keys = [k for k in dict.fromkeys([*metrics, *base_values])
          if _is_scalar_or_null(metrics.get(k)) and _is_scalar_or_null(base_values.get(k))
          and (metrics.get(k) is not None or base_values.get(k) is not None)]
  head = "<tr><th>metric</th>" + ("<th>base</th><th>tuned</th><th>change</th>" if base else "<th>value</th>") + "</tr>"
  rows = []
  for k in keys:
    v = metrics.get(k)
    if base is None:
      rows.append(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>")
      continue
    b = base.get(k)
    delta = v - b if isinstance(b, (int, float)) and v is not None else None
    sign = (delta or 0) * (1 if k in HIGHER_IS_BETTER else -1 if k in LOWER_IS_BETTER else 0)
    cls = " class='better'" if sign > 0 else " class='worse'" if sign < 0 else ""
    shown = "" if delta is None else f"{delta:+d}" if isinstance(delta, int) else f"{delta:+.4f}"
    rows.append(f"<tr><td>{html.escape(k)}</td><td>{_fmt(b)}</td><td>{_fmt(v)}</td><td{cls}>{shown}</td></tr>")
  return f"<table id='summary'>{head}{''.join(rows)}</table>"


def _class_table(per_class: dict, base_per_class: dict | None) -> str:
  cols = ["ap", "ap50", "precision", "recall", "num_gt", "num_pred"]
  head = "<tr><th>class</th>" + (
      "<th>base ap</th>" if base_per_class is not None else "") + "".join(f"<th>{c}</th>" for c in cols) + "</tr>"
  rows = []
  for name, row in sorted(per_class.items(), key=lambda kv: (kv[1]["ap"] is None, kv[1]["ap"] or 0)):
    base_cell = f"<td>{_fmt((base_per_class.get(name) or {}).get('ap'))}</td>" if base_per_class is not None else ""
    rows.append(f"<tr><td>{html.escape(name)}</td>{base_cell}" + "".join(f"<td>{_fmt(row[c])}</td>" for c in cols) + "</tr>")
  return f"<h2>Per class</h2><table id='per-class'>{head}{''.join(rows)}</table>"


def _mask_layer(rles: list[dict], colour: str) -> str | None:
  """The union of COCO RLE masks as a PNG data URI: `colour` at MASK_ALPHA where a mask is, clear elsewhere;
  at most THUMBNAIL_SIDE pixels a side (nearest neighbour, so edges stay crisp)."""
  if not rles:
    return None
  from pycocotools import mask as mask_utils

  union = None
  for r in rles:
    counts = r["counts"].encode("ascii") if isinstance(r["counts"], str) else r["counts"]
    m = mask_utils.decode({"size": list(r["size"]), "counts": counts}).astype(bool)
    union = m if union is None else union | m
  alpha = Image.fromarray(union.astype(np.uint8) * np.uint8(MASK_ALPHA))
  alpha.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.NEAREST)
  layer = Image.new("RGBA", alpha.size, colour)
  layer.putalpha(alpha)
  buf = io.BytesIO()
  layer.save(buf, format="PNG", optimize=True)
  return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _overlay(record: dict) -> str:
  """SVG mask layers and rectangles in the unit square (stretched over the image) and HTML tags for the labels."""
  shapes, tags = [], []
  for kind, colour in (("gt", GT_COLOUR), ("pred", PRED_COLOUR)):
    uri = _mask_layer(record.get(f"{kind}_masks") or [], colour)
    if uri:
      shapes.append(f"<image class='{kind}-mask' href='{uri}' x='0' y='0' width='1' height='1' "
                    "preserveAspectRatio='none'/>")
  for kind, colour, rows in (("gt", GT_COLOUR, record.get("gt_boxes") or []),
                             ("pred", PRED_COLOUR, record.get("pred_boxes") or [])):
    for row in rows:
      y1, x1, y2, x2, label = row[:5]
      dash = " stroke-dasharray='6 4'" if kind == "pred" and len(row) > 6 and not row[6] else ""
      shapes.append(f"<rect class='{kind}' x='{x1:.5f}' y='{y1:.5f}' width='{x2 - x1:.5f}' height='{y2 - y1:.5f}' "
                    f"fill='none' stroke='{colour}' stroke-width='3' vector-effect='non-scaling-stroke'{dash}/>")
      text = html.escape(label) + (f" {row[5]:.2f}" if kind == "pred" else "")
      tags.append(f"<span class='tag {kind}' style='left:{x1 * 100:.3f}%;top:{(y1 if kind == 'gt' else y2) * 100:.3f}%'>{text}</span>")
  svg = ("<svg viewBox='0 0 1 1' preserveAspectRatio='none' xmlns='http://www.w3.org/2000/svg'>"
         + "".join(shapes) + "</svg>") if shapes else ""
  return svg + "".join(tags)


def _panel(title: str, record: dict, uri: str | None) -> str:
  picture = (f"<div class='frame'><img src='{uri}' alt='{html.escape(record['image'])}'>{_overlay(record)}</div>"
             if uri else f"<div class='noimage'>image not available: {html.escape(record['image'])}</div>")
  answer = html.escape(record.get("prediction", "")) or "<i>(empty)</i>"
  problems = "".join(f"<div class='text worse'>unreadable: {html.escape(m['segment'])} ({html.escape(m['reason'])})</div>"
                     for m in record.get("malformed", []))
  return (f"<div class='panel'><b>{html.escape(title)}</b> · score {_fmt(record.get('score'))}{picture}"
          f"<div class='text'><span class='label'>prediction:</span> {answer}</div>{problems}</div>")


def _gallery(records: list[dict], base_records: dict | None, image_root: str | None, limit: int) -> str:
  order = sorted(records, key=lambda r: r.get("score") if r.get("score") is not None else float("inf"))
  cards = []
  for rec in order[:limit]:
    uri = _image_uri(os.path.join(image_root, rec["image"]) if image_root else None)
    panels = [_panel("tuned" if base_records is not None else "prediction", rec, uri)]
    if base_records is not None:
      base = base_records.get((rec["image"], rec["prefix"]))
      if base is not None:
        panels.insert(0, _panel("base", base, uri))
    refs = "".join(f"<div class='text'><span class='label'>reference:</span> {html.escape(r)}</div>"
                   for r in rec.get("references", []))
    cards.append(f"<div class='card'><div class='text'><span class='label'>{html.escape(rec['image'])} · prompt:</span> "
                 f"{html.escape(rec['prefix'])}</div><div class='panels'>{''.join(panels)}</div>{refs}</div>")
  shown = f"the {min(limit, len(records))} lowest-scoring of {len(records)} examples, worst first"
  legend = (f"<div class='legend'><span style='background:{GT_COLOUR}'>ground truth</span>"
            f"<span style='background:{PRED_COLOUR}'>prediction (dashed: no match at IoU 0.5)</span></div>")
  return f"<h2>Examples</h2><p>{shown}</p>{legend}<div class='gallery' id='gallery'>{''.join(cards)}</div>"


def _header(title: str, task: str, header: dict | None) -> str:
  """What was evaluated: a missing field shows as "–" rather than vanishing, so every report reads alike."""
  header = header or {}
  items = [("task", task)] + [(k.replace("_", " "), header.get(k)) for k in HEADER_FIELDS]
  meta = "".join(f"<div id='meta-{html.escape(k.replace(' ', '-'))}'><dt>{html.escape(k)}</dt><dd>"
                 f"{html.escape(str(v)) if v not in (None, '') else '–'}</dd></div>" for k, v in items)
  return f"<header id='run'><h1>{html.escape(title)}</h1><dl class='meta'>{meta}</dl></header>"


def render_report(metrics: dict, records: list[dict], *, image_root: str | None, title: str = "Evaluation",
                  base_metrics: dict | None = None, base_records: list[dict] | None = None,
                  max_examples: int = 60, header: dict | None = None) -> str:
  """The report page as a string. `records` come from `scoring.score`; `image_root` is what their
  `image` paths are relative to (None: cards without pictures); `header` has the HEADER_FIELDS known
  (model name, checkpoint, run id, dataset, split, date)."""
  base_by_key = None if base_records is None else {(r["image"], r["prefix"]): r for r in base_records}
  tables = ["<div><h2>Summary</h2>", _summary_table(metrics, base_metrics), "</div>"]
  if metrics.get("per_class"):
    tables += ["<div>", _class_table(metrics["per_class"], None if base_metrics is None
                                     else base_metrics.get("per_class", {})), "</div>"]
  parts = [_header(title, str(metrics.get("task", "")), header), "<main>",
           f"<div class='tables'>{''.join(tables)}</div>", _gallery(records, base_by_key, image_root, max_examples),
           "</main>"]
  return ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
          "<meta name='viewport' content='width=device-width, initial-scale=1'>"
          f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>{''.join(parts)}</body></html>")
