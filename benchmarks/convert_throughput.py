"""Images per second per core: our conversion vs a plain single-process PIL decode-resize-encode loop.

Both read the same synthetic JPEGs (a caption CSV), resize to the same longer side and encode JPEG q95.
Ours also checks paths, applies EXIF, normalises modes, writes JSONL, ArrayRecord shards and the report,
and runs `--workers` processes; the ratio is (ours per core) / (plain loop, one core). Run:

  .venv/bin/python benchmarks/convert_throughput.py --images 400 --workers 2
"""
from __future__ import annotations

import argparse
import io
import os
import tempfile
import time

import numpy as np
from PIL import Image

from components.convert import ConvertConfig, convert


def make_dataset(root: str, count: int, width: int, height: int) -> None:
  rng = np.random.default_rng(0)
  base = rng.integers(0, 255, (height, width, 3), np.uint8)  # noisy pixels: realistic JPEG decode cost
  with open(os.path.join(root, "captions.csv"), "w") as f:
    f.write("image,caption\n")
    for i in range(count):
      Image.fromarray(np.roll(base, i, axis=1)).save(os.path.join(root, f"{i:05d}.jpg"), quality=90)
      f.write(f"{i:05d}.jpg,synthetic image {i}\n")


def plain_loop(root: str, out: str, max_side: int) -> float:
  """The usual notebook loop: open, RGB, resize, save. Returns images per second."""
  names = sorted(n for n in os.listdir(root) if n.endswith(".jpg"))
  start = time.perf_counter()
  for name in names:
    image = Image.open(os.path.join(root, name)).convert("RGB")
    scale = max_side / max(image.size)
    if scale < 1:
      image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95)
    with open(os.path.join(out, name), "wb") as f:
      f.write(buffer.getvalue())
  return len(names) / (time.perf_counter() - start)


def ours(root: str, out: str, max_side: int, workers: int) -> float:
  count = sum(n.endswith(".jpg") for n in os.listdir(root))
  start = time.perf_counter()
  convert(ConvertConfig(input=root, format="csv", task="caption", output=out, workers=workers, max_side=max_side,
                        progress=False))
  return count / (time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--images", type=int, default=400)
  parser.add_argument("--width", type=int, default=1024)
  parser.add_argument("--height", type=int, default=768)
  parser.add_argument("--max-side", type=int, default=448)
  parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    src, plain_out, our_out = (os.path.join(tmp, d) for d in ("src", "plain", "ours"))
    for d in (src, plain_out):
      os.makedirs(d)
    make_dataset(src, args.images, args.width, args.height)
    plain = plain_loop(src, plain_out, args.max_side)
    converted = ours(src, our_out, args.max_side, args.workers)
  per_core = converted / args.workers
  print(f"{args.images} images {args.width}x{args.height} -> longer side {args.max_side}")
  print(f"plain PIL loop, 1 process : {plain:8.1f} images/s per core")
  print(f"components.convert, {args.workers} workers: {converted:8.1f} images/s total, {per_core:8.1f} per core")
  print(f"ratio (ours per core / plain per core): {per_core / plain:.2f}")


if __name__ == "__main__":
  main()
