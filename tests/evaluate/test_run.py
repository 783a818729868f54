"""`evaluate run` end to end on a tiny random model: outputs, and the same answers on 1 and 8 devices."""
import json
import os

import jax
import pytest

from components.evaluate import parse_detections, runner
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
  """Sharding the batch over devices changes nothing: each device runs the same program on its own rows.

  What may legitimately differ is the number of rows each device holds. XLA:CPU picks its matmul and
  reduction kernels (blocking, vector widths, accumulation order) by shape, so a row decoded in a batch of 4
  and the same row decoded alone differ in the last f32 bits of the logits; the logits of this tiny model
  with spread weights are large, and a log-probability is the difference of a logit and a log-sum-exp, so
  those bits show as ~1e-4 in `token_logprobs` (measured: 7.6e-5 between batch 1 and batch 4 on one device,
  1.1e-4 between 1 and 8). Hence the comparison with a tight tolerance holds the rows per device fixed: one
  device with batch 1 against eight devices with batch 8 (one row each; the last batch has 3 real rows and
  5 padding rows). The cache is f32 (tests/evaluate/conftest.py), so no bf16 rounding can amplify the bits.
  """
  assert len(jax.devices()) == 8, "tests/conftest.py forces 8 host devices"
  runner.run(run_args(tiny_model_dir, detect_dataset, tmp_path / "one", batch_size=1), devices=jax.devices()[:1])
  runner.run(run_args(tiny_model_dir, detect_dataset, tmp_path / "eight", batch_size=8), devices=jax.devices())
  one, eight = read(tmp_path / "one" / "predictions.jsonl"), read(tmp_path / "eight" / "predictions.jsonl")
  assert len(one) == len(eight) == 11
  for a, b in zip(one, eight):
    assert (a["image"], a["prefix"]) == (b["image"], b["prefix"])
    assert a["token_ids"] == b["token_ids"] and a["prediction"] == b["prediction"]
    assert a["token_logprobs"] == pytest.approx(b["token_logprobs"], rel=1e-6, abs=1e-6)
  assert any(p["token_ids"] for p in one)  # the model did say something

  # Another batch size moves only the last bits (see above): the greedy answers themselves stay the same.
  runner.run(run_args(tiny_model_dir, detect_dataset, tmp_path / "four", batch_size=4), devices=jax.devices()[:1])
  assert [p["token_ids"] for p in read(tmp_path / "four" / "predictions.jsonl")] == [p["token_ids"] for p in one]


def test_run_cli_writes_the_evaluation_directory(tiny_model_dir, detect_dataset, tmp_path, capsys):
  out = tmp_path / "out"
  with open(os.path.join(detect_dataset, "images", "1.png"), "wb") as f:
    f.write(b"not a png")  # a broken image costs its example, not the evaluation
  refs = read(os.path.join(detect_dataset, "valid.jsonl"))
  with open(os.path.join(detect_dataset, "valid.jsonl"), "w") as f:  # image sizes, as convert writes them
    f.writelines(json.dumps({**r, "width": 64, "height": 48}) + "\n" for r in refs)
  main(["run", "--checkpoint", tiny_model_dir, "--data", detect_dataset, "--task", "detect", "--output", str(out),
        "--limit", "5", "--max-decode-len", "8", "--batch-size", "3", "--run-id", "run-42"])
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
  for field, value in (("model", "tiny-v1"), ("checkpoint", tiny_model_dir), ("run-id", "run-42"),
                       ("dataset", detect_dataset), ("split", "valid")):
    assert f"<div id='meta-{field}'><dt>{field.replace('-', ' ')}</dt><dd>{value}</dd></div>" in page
  # The boxes as COCO results: image ids from the file stems (numeric: ints), classes numbered from 1.
  boxes = [b for r in rows for b in parse_detections(r["prediction"])[0]]
  written = json.loads((out / "coco_results.json").read_text())
  assert len(written) == sum(b.label in ("cat", "dog") for b in boxes)
  assert all(isinstance(r["image_id"], int) and r["category_id"] in (1, 2) for r in written)
