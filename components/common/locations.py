"""PaliGemma's location bins, the one rule every step uses (PALIGEMMA.md §4; big_vision's own).

A coordinate normalised by the image height (y) or width (x) is binned as `round(v * 1023)` (half to
even, as numpy and TF round), clipped to 0..1023, and read back as `bin / 1023`: bin 0 is the top/left
edge and 1023 the bottom/right edge. Detection (`components.convert.boxes_to_loc_text`) and the
segmentation text (`components.paligemma.segmentation`) both write their four `<locNNNN>` tokens with it.
Kept free of jax so that importing it costs nothing.
"""
from __future__ import annotations

import numpy as np

NUM_BINS = 1024
LOC_MAX = NUM_BINS - 1


def to_bins(values) -> np.ndarray:
  """Normalised coordinates in [0, 1] -> int bins in [0, 1023] (big_vision: round(v * 1023), clipped).

  float32 coordinates are multiplied in float32, as big_vision's TF ops do with its float32 boxes (the
  segmentation op): the two precisions can round an exact half-bin differently (v * 1023 = n + 0.5 in
  real numbers, e.g. 5/22). Anything else is multiplied in float64."""
  values = np.asarray(values)
  values = values if values.dtype == np.float32 else values.astype(np.float64)
  return np.clip(np.round(values * values.dtype.type(LOC_MAX)), 0, LOC_MAX).astype(np.int64)


def from_bins(bins) -> np.ndarray:
  """Bins -> normalised coordinates (`bin / 1023`, big_vision's decoding), float64."""
  return np.asarray(bins, np.float64) / LOC_MAX
