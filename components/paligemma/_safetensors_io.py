"""Streaming safetensors writer: one tensor converted and written at a time.

Hand-written because `safetensors.numpy.save_file` needs every tensor of a file in memory at once. The
format is an 8-byte little-endian header length, a JSON header (name -> dtype, shape, data offsets), then
the raw little-endian bytes in header order; the safetensors library reads what this writes (tests).
"""
from __future__ import annotations

import json
import logging
import pathlib
import struct
import time
from typing import Callable

import ml_dtypes
import numpy as np

from components.common.atomic import write_atomic

log = logging.getLogger(__name__)

DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(ml_dtypes.bfloat16): "BF16",
          np.dtype(np.float64): "F64"}


def write(path: pathlib.Path, items: list[tuple[str, np.dtype, tuple, Callable]], progress) -> None:
  """Writes one safetensors file atomically. `items`: (name, dtype, shape, produce) where `produce()`
  returns that tensor; it is called only when the tensor's turn comes (the header needs shapes only)."""
  header, offset = {"__metadata__": {"format": "pt"}}, 0
  for name, dtype, shape, _ in items:
    nbytes = int(np.prod(shape)) * dtype.itemsize
    header[name] = {"dtype": DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
    offset += nbytes
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)  # the data must start 8-byte aligned

  def write_tensors(f) -> None:
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)
    for name, dtype, shape, produce in items:
      array = np.ascontiguousarray(produce())  # safetensors is little-endian, as every host we run on
      if array.shape != shape or array.dtype != dtype:
        raise AssertionError(f"{name}: converted to {array.shape} {array.dtype}, planned {shape} {dtype}")
      f.write(array.reshape(-1).view(np.uint8).data)
      progress.advance(array.nbytes, path.name)

  write_atomic(path, write_tensors)


class Progress:
  """Log lines with bytes, rate and ETA, at most every 10 s."""

  def __init__(self, total: int, verb: str = "wrote"):
    self.total, self.verb, self.done, self.start, self.last = total, verb, 0, time.monotonic(), 0.0

  def advance(self, nbytes: int, where: str) -> None:
    self.done += nbytes
    now = time.monotonic()
    if now - self.last < 10 and self.done < self.total:
      return
    self.last = now
    rate = self.done / max(now - self.start, 1e-9)
    log.info("%s %s: %.2f/%.2f GB (%.0f MB/s, ETA %.0f s)", self.verb, where, self.done / 1e9, self.total / 1e9,
             rate / 1e6, (self.total - self.done) / rate)
