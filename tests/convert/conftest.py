"""Small image files, good and bad, for the convert tests (`imgs` fixture)."""
from __future__ import annotations

import io
import json
import os
import struct
import types
import zlib

import numpy as np
import pytest
from PIL import Image


def rgb(path, w=64, h=48, color=(200, 30, 60)):
  """A JPEG with a plain colour (good input)."""
  _save(Image.new("RGB", (w, h), color), path)
  return path


def grey(path, w=40, h=30, level=128):
  _save(Image.new("L", (w, h), level), path)
  return path


def rgba(path, w=40, h=30):
  """Half transparent red on a fully transparent background (composited: red-ish on white)."""
  image = Image.new("RGBA", (w, h), (0, 0, 0, 0))
  image.paste((255, 0, 0, 255), (0, 0, w // 2, h))
  _save(image, path)
  return path


def cmyk(path, w=40, h=30):
  _save(Image.new("CMYK", (w, h), (0, 255, 255, 0)), path)  # red in CMYK
  return path


def sixteen_bit(path, w=40, h=30, value=65535):
  """A 16-bit greyscale PNG; `value` is on the 0..65535 scale."""
  Image.fromarray(np.full((h, w), value, np.uint16)).save(path)
  return path


def palette(path, w=40, h=30):
  image = Image.new("P", (w, h), 1)
  image.putpalette([0, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))  # index 1 = blue
  image.info["transparency"] = 0
  _save(image, path)
  return path


def exif_rotated(path, orientation, w=60, h=40, box=(5, 10, 25, 20)):
  """A JPEG whose stored pixels are `w x h`, white with a black rectangle at `box` (x1, y1, x2, y2) in the
  stored grid, tagged with EXIF `orientation`."""
  array = np.full((h, w, 3), 255, np.uint8)
  x1, y1, x2, y2 = box
  array[y1:y2, x1:x2] = 0
  exif = Image.Exif()
  exif[0x0112] = orientation
  Image.fromarray(array).save(path, "JPEG", quality=100, exif=exif.tobytes())
  return path


def truncated(path, w=64, h=64):
  buffer = io.BytesIO()
  Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), np.uint8)).save(buffer, "JPEG")
  with open(path, "wb") as f:
    f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
  return path


def empty(path):
  open(path, "wb").close()
  return path


def text_file(path):
  with open(path, "w") as f:
    f.write("this is not an image\n")
  return path


def bomb(path, w=100_000, h=100_000):
  """A PNG whose header claims `w x h` pixels (10 gigapixels) but whose data is tiny."""
  def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
  ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
  with open(path, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b""))
  return path


def _save(image, path):
  os.makedirs(os.path.dirname(str(path)) or ".", exist_ok=True)
  fmt = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG"}[str(path).rsplit(".", 1)[-1].lower()]
  if fmt == "JPEG" and image.mode in ("RGBA", "P"):
    fmt = "PNG"  # callers pick .png for these
  image.save(path, fmt)


def read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def read_output(out):
  """{split: rows} of a dataset directory."""
  return {s: read_jsonl(os.path.join(out, f"{s}.jsonl")) for s in ("train", "valid", "test")}


@pytest.fixture
def imgs():
  return types.SimpleNamespace(
      rgb=rgb, grey=grey, rgba=rgba, cmyk=cmyk, sixteen_bit=sixteen_bit, palette=palette, exif_rotated=exif_rotated,
      truncated=truncated, empty=empty, text_file=text_file, bomb=bomb, read_jsonl=read_jsonl, read_output=read_output)
