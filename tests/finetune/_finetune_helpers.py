"""Helpers of the trainer's tests: a synthetic dataset directory of ArrayRecord shards written with the
convert step's record format (components/common/records.py), and the CLI in a subprocess."""
import io
import os
import pathlib
import subprocess
import sys

import numpy as np
from array_record.python.array_record_module import ArrayRecordWriter
from PIL import Image

from components.common import records

REPO = pathlib.Path(__file__).resolve().parents[2]
TINY_CONFIG = str(REPO / "components/finetune/configs/tiny_test.py")
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}


def _png(rgb, rng) -> bytes:
  pixels = np.clip(np.asarray(rgb)[None, None] + rng.integers(-20, 20, (70, 90, 3)), 0, 255).astype(np.uint8)
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format="PNG")
  return buf.getvalue()


def write_dataset(root: pathlib.Path, sizes=None, shards: int = 2, seed: int = 0) -> pathlib.Path:
  """Solid-colour images captioned with their colour: a task a tiny model learns in a few dozen steps."""
  rng = np.random.default_rng(seed)
  names = list(COLOURS)
  (root / records.RECORDS_DIR).mkdir(parents=True, exist_ok=True)
  for split, n in (sizes or {"train": 64, "valid": 12}).items():
    examples = []
    for i in range(n):
      colour = names[int(rng.integers(len(names)))]
      examples.append(records.encode_record({
          "id": f"{split}-{i}", "image": _png(COLOURS[colour], rng), "image_path": f"images/{split}-{i}.png",
          "prefix": "caption en", "suffix": f"a {colour} square"}))
    for s in range(shards):
      writer = ArrayRecordWriter(str(root / records.RECORDS_DIR / records.shard_name(split, s, shards)),
                                 "group_size:1")
      for rec in examples[s::shards]:
        writer.write(rec)
      writer.close()
  return root



def run_cli(workdir, data_dir, tokenizer, *overrides, env_extra=None, timeout=600, check=True):
  """`python -m components.finetune` with the tiny config in a subprocess; returns CompletedProcess."""
  cmd = [sys.executable, "-m", "components.finetune", "--config", TINY_CONFIG, "--workdir", str(workdir),
         f"--config.data_dir={data_dir}", f"--config.tokenizer={tokenizer}", *overrides]
  env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env_extra or {})}
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
  if check and proc.returncode != 0:
    raise AssertionError(f"finetune failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
  return proc
