"""Reading PaliGemma detection outputs back into boxes, and a confidence for each box.

A detection answer is objects joined by ` ; `, each `<locY1><locX1><locY2><locX2> label`, with the four
coordinates binned as `round(v * 1023)` of the image height/width. Boxes decode with big_vision's /1023
convention (the same one `components.convert` encodes with), so bin 0 is the top/left edge and 1023 the
bottom/right edge.

Rules, applied one `;`-separated segment at a time (a bad segment never spoils the good ones):
- a segment must be exactly four `<locNNNN>` tokens followed by a non-empty label; anything else (too few
  or too many locs, text before the locs, no label) is *malformed*: it yields no box (so the object it
  was meant to be counts as a miss) and is returned with the reason, for the report;
- y2 < y1 or x2 < x1 is *rejected* as malformed, not reordered: the format fixes the order, and swapping
  would credit the model for an output no PaliGemma parser accepts. Zero-size boxes (y1 == y2) are kept;
- empty segments (an empty answer, a trailing `;`) are ignored.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import re
from typing import Sequence

LOC_MAX = 1023  # bins are 0..1023; the box edge of bin n is n / 1023
_LOC = re.compile(r"<loc(\d{4})>")
_SEGMENT = re.compile(r"^(?:<loc(\d{4})>){4}")


@dataclasses.dataclass(frozen=True)
class Box:
  """One parsed object: normalised corners in [0, 1] and where it sits in the answer text."""
  label: str
  y1: float
  x1: float
  y2: float
  x2: float
  start: int  # character span of the segment in the answer, to find its tokens
  end: int

  def xywh(self, width: float = 1.0, height: float = 1.0) -> list[float]:
    """COCO's [x, y, w, h] in the given frame (the unit square by default)."""
    return [self.x1 * width, self.y1 * height, (self.x2 - self.x1) * width, (self.y2 - self.y1) * height]


@dataclasses.dataclass(frozen=True)
class Malformed:
  segment: str
  reason: str


def normalise_label(label: str) -> str:
  """Labels compare after trimming and collapsing whitespace (case is the user's, and kept)."""
  return " ".join(label.split())


def _segments(text: str):
  """(start, end, stripped segment) for each `;`-separated piece of the text."""
  start = 0
  for piece in text.split(";"):
    end = start + len(piece)
    lead = len(piece) - len(piece.lstrip())
    stripped = piece.strip()
    yield start + lead, start + lead + len(stripped), stripped
    start = end + 1


def parse_detections(text: str) -> tuple[list[Box], list[Malformed]]:
  """Boxes in a detection answer, and the segments that could not be read (see the module rules)."""
  boxes, malformed = [], []
  for start, end, segment in _segments(text):
    if not segment:
      continue
    head = _SEGMENT.match(segment)
    if head is None:
      n = len(_LOC.findall(segment))
      reason = (f"has {n} <loc> tokens, needs 4 then a label" if n != 4
                else "the 4 <loc> tokens do not open the segment together")
      malformed.append(Malformed(segment, reason))
      continue
    label = normalise_label(segment[head.end():])
    if _LOC.search(label):
      malformed.append(Malformed(segment, "more than 4 <loc> tokens"))
      continue
    if not label:
      malformed.append(Malformed(segment, "no label after the 4 <loc> tokens"))
      continue
    y1, x1, y2, x2 = (int(v) / LOC_MAX for v in _LOC.findall(segment[:head.end()]))
    if max(y1, x1, y2, x2) > 1.0:
      malformed.append(Malformed(segment, "a <loc> value above 1023"))
    elif y2 < y1 or x2 < x1:
      malformed.append(Malformed(segment, "corners out of order (y2 < y1 or x2 < x1)"))
    else:
      boxes.append(Box(label, y1, x1, y2, x2, start, end))
  return boxes, malformed


def box_confidences(text: str, boxes: Sequence[Box], tokens: Sequence[str] | None,
                    token_logprobs: Sequence[float] | None) -> list[float]:
  """exp(mean log-prob) of the tokens that spell each box: its 4 loc tokens and its label.

  The mean (a geometric-mean token probability) rather than the sum, so that a long label is not ranked
  below a short one for its length alone. `tokens` are the decoded text of each generated token, joining
  exactly to `text`; without them (or when they do not join up to `text`) every box gets the confidence
  of the whole answer; without log-probs at all, 1.0 (COCOeval then keeps the output order).
  """
  if not token_logprobs:
    return [1.0] * len(boxes)
  logprobs = [float(v) for v in token_logprobs]
  whole = math.exp(sum(logprobs) / len(logprobs))
  if not tokens or len(tokens) != len(logprobs) or "".join(tokens) != text:
    return [whole] * len(boxes)
  ends = list(itertools.accumulate(len(t) for t in tokens))
  confidences = []
  for box in boxes:
    picked = [lp for lp, end, piece in zip(logprobs, ends, tokens) if end - len(piece) < box.end and end > box.start]
    confidences.append(math.exp(sum(picked) / len(picked)) if picked else whole)
  return confidences


def loc_text(boxes: Sequence[dict]) -> str:
  """Unit-square boxes (`{"label", "box": [x1, y1, x2, y2]}`) as detection text, big_vision's bins (for
  showing another detector's boxes the way PaliGemma's answers are shown; scoring uses the boxes)."""
  def loc(v: float) -> str:
    return f"<loc{min(max(round(v * LOC_MAX), 0), LOC_MAX):04d}>"
  return " ; ".join("".join(loc(v) for v in (b["box"][1], b["box"][0], b["box"][3], b["box"][2])) + f" {b['label']}"
                    for b in boxes)
