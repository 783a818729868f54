"""A run sees today's data: the pipeline's own fingerprint -> convert wiring (`dag.todays_dataset`) on the KFP
local runner. kfp 2.16's local runner has no cache (kfp/local runs every task), so what it can show is that a
re-run after images were appended converts them, with a new listing fingerprint as convert's cache-key input;
that the compiled cloud pipelines key convert by that fingerprint is tests/pipelines/test_compile.py's."""
import json
import os

import pytest
from kfp import dsl

from pipelines import dag, kfp_local_fix, steps, synthetic

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::FutureWarning")]


def test_appended_images_reach_the_dataset_of_the_next_run(tmp_path, grow_valid_split):
  import kfp.local

  data = synthetic.make_detection_dataset(str(tmp_path / "labelled"), train=4, valid=2, image_size=32, seed=0)
  ops = steps.make_components("python:3.11")

  @dsl.pipeline(name="todays-data")
  def todays_data(dataset_uri: str) -> dsl.Dataset:
    convert = dag.todays_dataset(ops, dataset_uri=dataset_uri, dataset_format="coco", task="detect", classes="",
                                 splits="train=0.8,valid=0.1,test=0.1", seed=0)
    return convert.outputs["dataset"]

  kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
  kfp_local_fix.install()

  def run():
    dataset = todays_data(dataset_uri=data).output
    rows = {s: [json.loads(line) for line in open(os.path.join(dataset.path, f"{s}.jsonl"))] for s in ("train", "valid")}
    return dataset.metadata["source_fingerprint"], {s: sorted(r["source_image"] for r in rows[s]) for s in rows}

  before_key, before = run()
  added = grow_valid_split(data, 2)  # today's labelling

  after_key, after = run()
  assert before_key.startswith("8 files") and after_key.startswith("10 files") and after_key != before_key
  assert after["train"] == before["train"]
  assert after["valid"] == sorted(before["valid"] + added)
