"""`pipelines.local` as a new user runs it (issue 14): own data with a small configuration started from
random weights, lengths from the data. (The demo's output, short and live in a file: test_local_run.py's
test_default_demo_learns.)"""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::FutureWarning")]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def crowded_coco(root, per_image=6, train=16, valid=4, size=112, seed=0):
  """A Roboflow-style COCO export whose images each hold `per_image` objects: suffixes of ~50 tokens, twice the
  demo config's text_len."""
  from pipelines import synthetic

  synthetic.make_detection_dataset(str(root), train=train, valid=valid, image_size=size, seed=seed)
  rng = np.random.default_rng(seed)
  for split in ("train", "valid"):
    path = root / split / "_annotations.coco.json"
    coco = json.loads(path.read_text())
    coco["annotations"] = []
    for image in coco["images"]:
      for _ in range(per_image):
        x, y = (int(v) for v in rng.integers(0, size // 2, 2))
        w, h = (int(v) for v in rng.integers(8, size // 2, 2))
        coco["annotations"].append({"id": len(coco["annotations"]), "image_id": image["id"], "bbox": [x, y, w, h],
                                    "category_id": int(rng.integers(1, len(coco["categories"]) + 1)),
                                    "area": w * h, "iscrowd": 0})
    path.write_text(json.dumps(coco))
  return root


def test_own_data_small_config_random_init_from_the_command_line(tmp_path):
  data, out = crowded_coco(tmp_path / "coco"), tmp_path / "run"
  result = subprocess.run(
      [sys.executable, "-m", "pipelines.local", "--dataset", str(data), "--format", "coco", "--model", "small-v2",
       "--init", "random", "--steps", "20", "--output", str(out)],
      cwd=REPO, capture_output=True, text=True, timeout=1800)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  summary = json.loads((out / "summary.json").read_text())
  assert summary["model_init"] == {"init": "random", "seed": 0, "model": "small-v2"}
  assert "small-v2 starts from random weights (seed 0)" in result.stderr
  assert not (out / "inputs" / "dataset").exists()  # no demo images on own data
  run_dir = out / "artifacts" / os.listdir(out / "artifacts")[0]
  assert json.loads((run_dir / "download" / "model_dir" / "model.json").read_text())["name"] == "small-v2"
  # text_len from the data: every training example whole (the trainer feeds text_len + 1 tokens)
  text_len = json.loads((run_dir / "finetune" / "tuned_model" / "config.json").read_text())["text_len"]
  tokenizer_path = run_dir / "download" / "model_dir" / "tokenizer.model"
  from components.paligemma import Tokenizer

  tok = Tokenizer(str(tokenizer_path))
  rows = [json.loads(line) for line in (run_dir / "convert" / "dataset" / "train.jsonl").read_text().splitlines()]
  longest = max(int(np.count_nonzero(tok.encode_train(r["prefix"], r["suffix"], 4096)["text"])) for r in rows)
  assert longest > 24 + 1  # the demo config's text_len would have cut them
  assert longest <= text_len + 1 < longest + 8 and text_len % 8 == 0
  assert f"text_len {text_len} from the data" in result.stdout
  assert not any("truncates" in w["message"] for w in summary["warnings"])
  # evaluate's decode length from the references, not the demo's 16
  assert re.search(r"up to (\d+) new tokens", result.stdout) and int(
      re.search(r"up to (\d+) new tokens", result.stdout)[1]) > 16
  assert summary["convert"]["counts"]["train"] == 16 and summary["convert"]["report"].endswith("report.json")
  assert "rejected" in summary["convert"] and "dataset: " in result.stdout
