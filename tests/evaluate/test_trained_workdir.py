"""The whole story on a tiny scale: fine-tune a random tiny model for a few steps, evaluate the workdir
against its untrained start, and see the report say it got better."""
import io
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordWriter
from PIL import Image

from components import paligemma
from components.common import records
from components.evaluate import runner

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_colour_dataset(root, sizes):
  """Solid-colour squares captioned with their colour: records for training, jsonl + images for evaluation."""
  rng = np.random.default_rng(0)
  os.makedirs(os.path.join(root, "images"))
  os.makedirs(os.path.join(root, records.RECORDS_DIR))
  for split, n in sizes.items():
    rows, writer = [], ArrayRecordWriter(os.path.join(root, records.RECORDS_DIR, records.shard_name(split, 0, 1)),
                                         "group_size:1")
    for i in range(n):
      colour = list(COLOURS)[i % len(COLOURS)]
      pixels = np.clip(np.asarray(COLOURS[colour])[None, None] + rng.integers(-20, 20, (60, 80, 3)), 0, 255)
      buf = io.BytesIO()
      Image.fromarray(pixels.astype(np.uint8)).save(buf, format="PNG")
      path = f"images/{split}-{i}.png"
      with open(os.path.join(root, path), "wb") as f:
        f.write(buf.getvalue())
      row = {"image": path, "prefix": "caption en", "suffix": f"a {colour} square"}
      rows.append(row)
      writer.write(records.encode_record({**row, "id": f"{split}-{i}", "image": buf.getvalue(), "image_path": path}))
    writer.close()
    with open(os.path.join(root, f"{split}.jsonl"), "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in rows)


@pytest.mark.slow
def test_evaluate_a_finetune_workdir_against_its_start(tmp_path):
  data = str(tmp_path / "data")
  write_colour_dataset(data, {"train": 48, "valid": 8})
  tokenizer = paligemma.train_small_tokenizer(str(tmp_path / "tok.model"))
  workdir = tmp_path / "workdir"
  cmd = [sys.executable, "-m", "components.finetune", "--config", os.path.join(REPO, "components/finetune/configs/tiny_test.py"),
         "--workdir", str(workdir), f"--config.data_dir={data}", f"--config.tokenizer={tokenizer}",
         "--config.total_steps=12", "--config.checkpoint_every=1", "--config.keep_checkpoints=30"]
  t0 = time.monotonic()
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  print(f"finetune took {time.monotonic() - t0:.0f}s")

  common = dict(data=data, task="caption", max_decode_len=6, batch_size=8)
  # Step 1 trains with learning-rate multiplier 0 (PALIGEMMA.md §5): its weights are the random start.
  start = runner.run(runner.RunArgs(checkpoint=str(workdir), which="1", output=str(tmp_path / "start"), **common))
  tuned = runner.run(runner.RunArgs(checkpoint=str(workdir), output=str(tmp_path / "tuned"),
                                    baseline=str(tmp_path / "start"), **common))
  # (BLEU-4 is no use here: three-word captions have no 4-grams.)
  assert tuned["cider"] > start["cider"] and tuned["bleu4"] >= start["bleu4"]
  assert tuned["baseline"]["cider"] == pytest.approx(start["cider"])
  page = (tmp_path / "tuned" / "report.html").read_text()
  assert "<b>base</b>" in page and "<b>tuned</b>" in page
