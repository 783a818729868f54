"""Images per second per core: our conversion vs a plain single-process PIL decode-resize-encode loop.

Both read the same synthetic JPEGs (a caption CSV), resize to the same longer side and encode JPEG q95.
Ours also checks paths, applies EXIF, normalises modes, writes JSONL, ArrayRecord shards and the report.
Two ratios, ours / plain:
- wall clock: ours with `--workers` processes, images/s divided by the workers, against the plain loop;
  meaningful on a machine whose cores are free;
- CPU time: both in one process (`--workers 1` runs in-process), images per CPU-second; meaningful even
  on a shared, oversubscribed machine, where wall clock mostly measures the neighbours.
Run: .venv/bin/python benchmarks/convert_throughput.py --images 400 --workers 2
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


def plain_loop(root: str, out: str, max_side: int) -> tuple[float, float]:
  """The usual notebook loop: open, RGB, resize, save. Returns (images per second, per CPU-second)."""
  names = sorted(n for n in os.listdir(root) if n.endswith(".jpg"))
  start, cpu = time.perf_counter(), time.process_time()
  for name in names:
    image = Image.open(os.path.join(root, name)).convert("RGB")
    scale = max_side / max(image.size)
    if scale < 1:
      image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95)
    with open(os.path.join(out, name), "wb") as f:
      f.write(buffer.getvalue())
  return len(names) / (time.perf_counter() - start), len(names) / (time.process_time() - cpu)


def ours(root: str, out: str, max_side: int, workers: int) -> tuple[float, float]:
  """-> (images per second, per CPU-second of this process: only meaningful with workers=1)."""
  count = sum(n.endswith(".jpg") for n in os.listdir(root))
  start, cpu = time.perf_counter(), time.process_time()
  convert(ConvertConfig(input=root, format="csv", task="caption", output=out, workers=workers, max_side=max_side,
                        progress=False))
  return count / (time.perf_counter() - start), count / (time.process_time() - cpu)


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
    plain, plain_cpu = plain_loop(src, plain_out, args.max_side)
    converted, _ = ours(src, our_out, args.max_side, args.workers)
    _, ours_cpu = ours(src, our_out, args.max_side, 1)
  per_core = converted / args.workers
  print(f"{args.images} images {args.width}x{args.height} -> longer side {args.max_side}; {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f}")
  print(f"plain PIL loop, 1 process   : {plain:7.1f} images/s, {plain_cpu:7.1f} images per CPU-second")
  print(f"components.convert, {args.workers} workers: {converted:7.1f} images/s, {per_core:7.1f} per core")
  print(f"components.convert, 1 process : {ours_cpu:7.1f} images per CPU-second")
  print(f"ratio per core, wall clock (ours / plain): {per_core / plain:.2f}")
  print(f"ratio per core, CPU time   (ours / plain): {ours_cpu / plain_cpu:.2f}")


if __name__ == "__main__":
  main()
