"""`evaluate run` end to end on a tiny random model: outputs, and the same answers on 1 and 8 devices."""
import json
import os

import jax
import pytest

from components.evaluate import runner
from components.evaluate.__main__ import main


def run_args(model_dir, data_dir, out, **kw):
  return runner.RunArgs(checkpoint=os.path.join(model_dir, "tiny.npz"), data=data_dir, task="detect",
                        output=str(out), max_decode_len=kw.pop("max_decode_len", 12), batch_size=kw.pop("batch_size", 4),
                        **kw)


def read(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


@pytest.mark.slow
def test_one_and_eight_devices_give_the_same_predictions(tiny_model_dir, detect_dataset, tmp_path):
  assert len(jax.devices()) == 8, "tests/conftest.py forces 8 host devices"
  runner.run(run_args(tiny_model_dir, detect_dataset, tmp_path / "one"), devices=jax.devices()[:1])
  runner.run(run_args(tiny_model_dir, detect_dataset, tmp_path / "eight"), devices=jax.devices())
  one, eight = read(tmp_path / "one" / "predictions.jsonl"), read(tmp_path / "eight" / "predictions.jsonl")
  assert len(one) == len(eight) == 11  # 11 rows: batches of 4 on one device, 8 (3 padding rows) on eight
  for a, b in zip(one, eight):
    assert (a["image"], a["prefix"]) == (b["image"], b["prefix"])
    assert a["token_ids"] == b["token_ids"] and a["prediction"] == b["prediction"]
    assert a["token_logprobs"] == pytest.approx(b["token_logprobs"], rel=1e-5, abs=1e-5)
  assert any(p["token_ids"] for p in one)  # the model did say something


def test_run_cli_writes_the_evaluation_directory(tiny_model_dir, detect_dataset, tmp_path, capsys):
  out = tmp_path / "out"
  with open(os.path.join(detect_dataset, "images", "1.png"), "wb") as f:
    f.write(b"not a png")  # a broken image costs its example, not the evaluation
  main(["run", "--checkpoint", tiny_model_dir, "--data", detect_dataset, "--task", "detect", "--output", str(out),
        "--limit", "5", "--max-decode-len", "8", "--batch-size", "3"])
  printed = json.loads(capsys.readouterr().out)
  rows = read(out / "predictions.jsonl")
  assert len(rows) == 4 and "images/1.png" not in {r["image"] for r in rows}
  for row in rows:
    assert {"image", "prefix", "reference", "prediction", "token_logprobs", "tokens"} <= set(row)
    assert len(row["token_logprobs"]) == len(row["token_ids"]) <= 8
    if row["tokens"] is not None:
      assert "".join(row["tokens"]) == row["prediction"]
  metrics = json.loads((out / "metrics.json").read_text())
  assert metrics == printed and {"map", "map50", "map75"} <= set(metrics) and metrics["num_examples"] == 4
  assert metrics["num_skipped"] == 1 and "images/1.png" in metrics["skipped_examples"][0]["reason"]
  page = (out / "report.html").read_text()
  assert page.count("data:image/jpeg;base64,") == 4 and "id='gallery'" in page
