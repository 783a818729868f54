"""The model's input image: encoded bytes -> `[size, size, 3]` float32 in [-1, 1], as big_vision feeds it.

RGB, bilinear resize with antialias (Pillow's bilinear filter widens with the downscale factor: that is the
antialiasing big_vision asks of `tf.image.resize(antialias=True)`; values differ in the last bits), then
x / 127.5 - 1. Training and evaluation both call this, so the model is scored on what it was trained on.
"""
from __future__ import annotations

import io

import numpy as np


def preprocess_image(data: bytes, size: int) -> np.ndarray:
  """Encoded image -> [size, size, 3] float32 in [-1, 1]."""
  from PIL import Image  # here, not at the top: the model library imports without Pillow (benchmarks/gpu_suite.py)

  with Image.open(io.BytesIO(data)) as img:
    img = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
  return np.asarray(img, np.float32) / 127.5 - 1.0
