"""Image hygiene with Pillow: safe paths, decoding, EXIF orientation (boxes follow), 8-bit RGB, size limits.

Boxes given by an annotation file are taken to be in the stored pixel grid of the file (what
`PIL.Image.open(f).size` reports), unless the file declares an image size that matches the
EXIF-oriented grid instead (the annotation tool already showed the rotated image); either way they end
up in the oriented, possibly downscaled, image that we write.
"""
from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image, ImageOps

from components.convert.rows import RowError

ORIENTATION_TAG = 0x0112
# Pillow's own default budget (~89.5 megapixels); `--max-pixels` changes it.
DEFAULT_MAX_PIXELS = 89_478_485
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def resolve_inside(root: str, relpath: str) -> str:
  """`root/relpath`, refusing absolute paths, `..` and symlinks that lead outside `root`."""
  if not relpath or not str(relpath).strip():
    raise RowError("the row names no image file; fill in its image path")
  if os.path.isabs(relpath) or relpath.startswith(("/", "\\")) or "://" in relpath:
    raise RowError(f"image path {relpath!r} is absolute; give a path relative to the dataset root")
  parts = relpath.replace("\\", "/").split("/")
  if ".." in parts:
    raise RowError(f"image path {relpath!r} goes outside the dataset root with '..'; copy the image into the dataset")
  path = os.path.join(root, *parts)
  real_root = os.path.realpath(root)
  if os.path.commonpath([os.path.realpath(path), real_root]) != real_root:
    raise RowError(f"image path {relpath!r} is a symlink leading outside the dataset root; copy the image into the dataset")
  return path


def orient_box(box, orientation: int, width: int, height: int) -> tuple[float, float, float, float]:
  """A box (x1, y1, x2, y2) in the stored `width x height` grid -> the grid after `ImageOps.exif_transpose`."""
  xs, ys = orient_points(np.array([box[0], box[2]], np.float64), np.array([box[1], box[3]], np.float64),
                         orientation, width, height)
  return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())


def orient_points(xs: np.ndarray, ys: np.ndarray, orientation: int, width: int, height: int):
  """Points (x, y) in the stored `width x height` grid -> the grid after `ImageOps.exif_transpose`."""
  w, h = width, height
  # Where each EXIF orientation sends a point (x, y), matching the Pillow transpose exif_transpose uses.
  return {
      1: lambda x, y: (x, y),
      2: lambda x, y: (w - x, y),  # FLIP_LEFT_RIGHT
      3: lambda x, y: (w - x, h - y),  # ROTATE_180
      4: lambda x, y: (x, h - y),  # FLIP_TOP_BOTTOM
      5: lambda x, y: (y, x),  # TRANSPOSE
      6: lambda x, y: (h - y, x),  # ROTATE_270 (90 degrees clockwise)
      7: lambda x, y: (h - y, w - x),  # TRANSVERSE
      8: lambda x, y: (y, w - x),  # ROTATE_90 (90 degrees counter-clockwise)
  }[orientation](xs, ys)


def _to_rgb(image: Image.Image) -> tuple[Image.Image, str | None]:
  """Any Pillow mode -> 8-bit RGB; returns the note to report when something was converted."""
  mode = image.mode
  if mode == "RGB":
    return image, None
  if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
    values = np.asarray(image, dtype=np.float64)
    # 16-bit data spans 0..65535 whatever Pillow calls the mode; 32-bit int or float data we scale by
    # its own maximum (floats already in [0, 1] are taken as such).
    if mode in _SIXTEEN_BIT_MODES or (mode == "I" and values.max(initial=0) > 255):
      full_scale = 65535.0 if values.max(initial=0) <= 65535 else values.max()
    elif mode == "F" and values.max(initial=0) <= 1.0:
      full_scale = 1.0
    else:
      full_scale = 255.0
    grey = np.clip(np.round(values * (255.0 / full_scale)), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, "L").convert("RGB"), f"converted {mode} ({image.getbands()[0]}) to 8-bit RGB"
  has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info)
  if has_alpha:
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB"), f"composited {mode} on white and converted to RGB"
  return image.convert("RGB"), f"converted {mode} to RGB"


def load_rgb(path: str, max_pixels: int, name: str | None = None,
             max_side: int | None = None) -> tuple[Image.Image, int, tuple[int, int], list[str]]:
  """Decode `path` fully -> (RGB image oriented by EXIF, orientation, stored (w, h), notes).

  `name` is how messages call the file (its path inside the dataset). With `max_side`, a JPEG may be
  decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, Pillow's `draft`) when that still leaves at
  least the final size: the returned image can then be smaller than the stored size; `resize_to` finishes.
  """
  name = name or path
  if not os.path.lexists(path):
    raise RowError(f"image file {name} does not exist; add it or remove the row")
  if not os.path.isfile(path):
    raise RowError(f"image path {name} is not a file")
  if os.path.getsize(path) == 0:
    raise RowError(f"image file {name} is empty (0 bytes); replace it with the real image or remove the row")
  budget, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, max_pixels  # restored below: no lasting global change
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      with Image.open(path) as opened:
        stored_size = opened.size
        if stored_size[0] * stored_size[1] > max_pixels:
          raise Image.DecompressionBombError("over budget")
        orientation = int(opened.getexif().get(ORIENTATION_TAG, 1) or 1)
        if max_side:
          opened.draft(None, target_size(stored_size, max_side))  # a no-op for anything but JPEG
        opened.load()  # truncated or corrupt data fails here, not later
        image = ImageOps.exif_transpose(opened) if orientation in range(2, 9) else opened  # loaded: usable closed
  except (Image.DecompressionBombError, Image.DecompressionBombWarning):
    raise RowError(
        f"image file {name} declares {_pixels_text(path)} pixels, over the budget of {max_pixels:,} "
        "(a possible decompression bomb); downscale it or raise --max-pixels") from None
  except Image.UnidentifiedImageError:
    raise RowError(f"file {name} is not an image Pillow can read; replace it with a JPEG/PNG or remove the row") from None
  except (OSError, SyntaxError, ValueError) as e:
    raise RowError(f"image file {name} is corrupt or truncated ({e}); re-export it or remove the row") from None
  finally:
    Image.MAX_IMAGE_PIXELS = budget
  if orientation not in range(1, 9):
    orientation = 1
  image, note = _to_rgb(image)
  notes = [note] if note else []
  if orientation != 1:
    notes.append(f"applied EXIF orientation {orientation}")
  return image, orientation, stored_size, notes


def _pixels_text(path: str) -> str:
  Image.MAX_IMAGE_PIXELS = None  # only the header is read, to say its size; load_rgb restores the budget
  try:
    with Image.open(path) as im:
      return f"{im.size[0]}x{im.size[1]}"
  except Exception:  # noqa: BLE001 - the message is best effort; the refusal stands either way
    return "too many"


def oriented(size: tuple[int, int], orientation: int) -> tuple[int, int]:
  """The (w, h) of a stored `size` after EXIF `orientation` (5-8 swap the sides)."""
  return (size[1], size[0]) if orientation in (5, 6, 7, 8) else tuple(size)


def target_size(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
  """`size` shrunk so the longer side is at most `max_side` (never enlarged); models resize again anyway."""
  if not max_side or max(size) <= max_side:
    return tuple(size)
  scale = max_side / max(size)
  return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def resize_to(image: Image.Image, size: tuple[int, int]) -> Image.Image:
  return image if image.size == tuple(size) else image.resize(size, Image.Resampling.BICUBIC)


def encode(image: Image.Image, fmt: str) -> bytes:
  buffer = io.BytesIO()
  if fmt == "jpeg":
    image.save(buffer, "JPEG", quality=95)
  else:
    image.save(buffer, "PNG")
  return buffer.getvalue()
