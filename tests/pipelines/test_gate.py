"""The promotion gate, the champion record, and the runtime helpers the components use."""
import json
import os

import pytest

from pipelines import champion, gate, runtime


def test_headline_metric_per_task():
  assert [gate.headline_metric(t) for t in ("detect", "caption", "vqa", "ocr")] == \
      ["map50", "cider", "accuracy", "anls"]
  with pytest.raises(ValueError, match="unknown task 'segment'"):
    gate.headline_metric("segment")


def test_without_champion_the_tuned_model_must_beat_the_base_model():
  passed = gate.decide("detect", tuned={"map50": 0.62, "map": 0.3}, base={"map50": 0.05})
  assert passed.passed and passed.reference_name == "base model" and passed.reference == 0.05
  assert "0.6200 beats the base model's 0.0500" in passed.reason
  same = gate.decide("detect", tuned={"map50": 0.05}, base={"map50": 0.05})
  assert not same.passed and "does not beat the base model's" in same.reason


def test_tuned_worse_than_champion_is_not_promoted_and_says_why():
  record = {"model_uri": "gs://b/models/run-1", "metric": "map50", "value": 0.8, "run_id": "run-1",
            "date": "2026-11-01T00:00:00+00:00"}
  decision = gate.decide("detect", tuned={"map50": 0.7}, base={"map50": 0.1}, champion=record)
  assert not decision.passed
  assert decision.reference_name == "champion" and decision.reference == 0.8
  assert "0.7000 does not beat the champion's 0.8000" in decision.reason
  markdown = decision.to_markdown(record)
  assert "not promoted" in markdown and "| champion (run-1, 2026-11-01T00:00:00+00:00) | 0.8000 |" in markdown


def test_threshold_and_margin():
  below = gate.decide("caption", tuned={"cider": 0.9}, base={"cider": 0.1}, min_metric=1.0)
  assert not below.passed and "below the required threshold 1.0000" in below.reason
  small_gain = gate.decide("ocr", tuned={"anls": 0.52}, base={"anls": 0.5}, min_improvement=0.05)
  assert not small_gain.passed and "by more than 0.0500" in small_gain.reason
  enough = gate.decide("ocr", tuned={"anls": 0.56}, base={"anls": 0.5}, min_improvement=0.05)
  assert enough.passed


def test_champion_of_another_metric_is_ignored():
  """A record written for another task's metric is no reference: compare with the base model."""
  record = {"model_uri": "x", "metric": "cider", "value": 99.0, "run_id": "r", "date": "d"}
  decision = gate.decide("detect", tuned={"map50": 0.4}, base={"map50": 0.2}, champion=record)
  assert decision.passed and decision.reference_name == "base model"


def test_undefined_metric_is_not_promoted_and_says_why():
  """mAP is null when the split has no ground-truth box: no comparison, no export, and the reason says so."""
  decision = gate.decide("detect", tuned={"map50": None}, base={"map50": None})
  assert not decision.passed and decision.tuned is None
  assert "tuned model's map50 is undefined" in decision.reason
  assert "| tuned | undefined |" in decision.to_markdown(None)
  record = {"model_uri": "x", "metric": "map50", "value": 0.5, "run_id": "r", "date": "d"}
  assert not gate.decide("detect", tuned={"map50": None}, base={"map50": 0.1}, champion=record).passed


def test_missing_metric_is_a_clear_error():
  with pytest.raises(KeyError, match="tuned model's evaluation has no 'map50' metric.*'cider'"):
    gate.decide("detect", tuned={"cider": 1.0}, base={"map50": 0.1})


def test_champion_record_round_trip(tmp_path):
  uri = str(tmp_path / "models" / "champion.json")
  assert champion.read(uri) is None
  record = champion.new_record(model_uri="gs://b/models/run-2", metric="map50", value=0.71, task="detect",
                               run_id="run-2", base_model="paligemma2-3b-pt-224", dataset="gs://b/labelled/")
  champion.write(uri, record)
  assert champion.read(uri) == record
  assert os.listdir(tmp_path / "models") == ["champion.json"]  # the temporary file was renamed away
  with pytest.raises(ValueError, match="needs \\['run_id'\\]"):
    champion.write(uri, {k: v for k, v in record.items() if k != "run_id"})


def test_broken_champion_record_names_the_file(tmp_path):
  path = tmp_path / "champion.json"
  path.write_text(json.dumps({"model_uri": "x"}))
  with pytest.raises(ValueError, match=f"champion record {path} lacks"):
    champion.read(str(path))


def test_champion_location():
  assert runtime.champion_location("", "gs://b/models/") == "gs://b/models/champion.json"
  assert runtime.champion_location("gs://c/champ.json", "gs://b/models") == "gs://c/champ.json"
  assert runtime.champion_location("", "") == ""
