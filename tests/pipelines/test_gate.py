"""The promotion gate, the champion record, and the runtime helpers the components use."""
import json
import os

import pytest

from pipelines import champion, gate, runtime


def test_headline_metric_per_task():
  assert [gate.headline_metric(t) for t in ("detect", "caption", "vqa", "ocr", "segment")] == \
      ["map50", "cider", "accuracy", "anls", "mask_map50"]
  with pytest.raises(ValueError, match="unknown task 'classify'"):
    gate.headline_metric("classify")


def test_without_champion_the_tuned_model_must_beat_the_base_model():
  passed = gate.decide("detect", tuned={"map50": 0.62, "map": 0.3}, base={"map50": 0.05})
  assert passed.passed and passed.reference_name == "base model" and passed.reference == 0.05
  assert "0.6200 beats the base model's 0.0500" in passed.reason
  same = gate.decide("detect", tuned={"map50": 0.05}, base={"map50": 0.05})
  assert not same.passed and "does not beat the base model's" in same.reason


TODAY = {"name": "valid", "fingerprint": "sha256:" + "b" * 64, "examples": 240, "scored": 240}
YESTERDAY = {"name": "valid", "fingerprint": "sha256:" + "a" * 64, "examples": 200}


def champion_record(value, **extra):
  return {"model_uri": "gs://b/models/run-1", "metric": "map50", "value": value, "task": "detect", "run_id": "run-1",
          "date": "2026-11-01T00:00:00+00:00", "split": YESTERDAY, **extra}


def test_tuned_worse_than_champion_is_not_promoted_and_says_why():
  record = champion_record(0.8)
  decision = gate.decide("detect", tuned={"map50": 0.7}, base={"map50": 0.1}, champion=record,
                         champion_metrics={"map50": 0.75}, split=TODAY)
  assert not decision.passed
  assert decision.reference_name == "champion" and decision.reference == 0.75  # re-scored, not the stored 0.8
  assert "0.7000 does not beat the champion's 0.7500 on this run's valid split" in decision.reason
  markdown = decision.to_markdown(record)
  assert "not promoted" in markdown
  assert "| champion (run-1, 2026-11-01T00:00:00+00:00), re-scored | 0.7500 | this run's split |" in markdown


def test_beating_the_stored_score_is_not_enough():
  """(b) The champion was promoted on yesterday's (smaller) split with 0.60; on today's split it scores 0.70.
  A tuned model at 0.65 beats the old number but not the champion on today's data: not exported."""
  record = champion_record(0.60)
  decision = gate.decide("detect", tuned={"map50": 0.65, "num_examples": 240}, base={"map50": 0.05},
                         champion=record, champion_metrics={"map50": 0.70}, split=TODAY)
  assert not decision.passed
  assert (decision.champion_stored, decision.champion_rescored, decision.reference) == (0.60, 0.70, 0.70)
  markdown = decision.to_markdown(record)
  for row in ("| tuned | 0.6500 | this run's split |", "| base | 0.0500 | this run's split |",
              "re-scored | 0.7000 | this run's split |",
              f"stored when promoted | 0.6000 | split `valid` `{YESTERDAY['fingerprint']}` (200 examples): not this "
              "run's split |"):
    assert row in markdown, markdown
  assert f"Scored on split `valid` of this run's dataset: fingerprint `{TODAY['fingerprint']}`, 240 examples." \
      in markdown
  better = gate.decide("detect", tuned={"map50": 0.72}, base={"map50": 0.05}, champion=record,
                       champion_metrics={"map50": 0.70}, split=TODAY)
  assert better.passed and "beats the champion's 0.7000 (+0.0200) on this run's valid split" in better.reason


def test_a_champion_must_be_rescored():
  with pytest.raises(ValueError, match="not re-scored on this run's split"):
    gate.decide("detect", tuned={"map50": 0.9}, base={"map50": 0.1}, champion=champion_record(0.5))


def test_eval_limit_is_shown():
  decision = gate.decide("detect", tuned={"map50": 0.9}, base={"map50": 0.1}, split={**TODAY, "scored": 100})
  assert "240 examples (100 scored: eval_limit)." in decision.to_markdown(None)


def test_threshold_and_margin():
  below = gate.decide("caption", tuned={"cider": 0.9}, base={"cider": 0.1}, min_metric=1.0)
  assert not below.passed and "below the required threshold 1.0000" in below.reason
  small_gain = gate.decide("ocr", tuned={"anls": 0.52}, base={"anls": 0.5}, min_improvement=0.05)
  assert not small_gain.passed and "by more than 0.0500" in small_gain.reason
  enough = gate.decide("ocr", tuned={"anls": 0.56}, base={"anls": 0.5}, min_improvement=0.05)
  assert enough.passed


def test_champion_of_another_metric_or_task_is_an_error_unless_rebaselining():
  """Never a silent overwrite: the error says how to re-baseline; re-baselining compares with the base model
  and says so in the Markdown."""
  record = {"model_uri": "x", "metric": "cider", "value": 99.0, "run_id": "r", "date": "d", "task": "caption"}
  with pytest.raises(gate.ChampionMismatch, match="task 'caption' judged by 'cider'.*rebaseline=true"):
    gate.decide("detect", tuned={"map50": 0.4}, base={"map50": 0.2}, champion=record)
  with pytest.raises(gate.ChampionMismatch, match="gs://b/champion.json holds a champion for task 'caption'"):
    gate.model_to_rescore(record, "detect", location="gs://b/champion.json")
  same_metric_other_task = {**champion_record(0.3), "task": "ocr", "metric": "map50"}
  with pytest.raises(gate.ChampionMismatch):
    gate.model_to_rescore(same_metric_other_task, "detect")

  assert gate.model_to_rescore(record, "detect", rebaseline=True) == ""
  assert gate.model_to_rescore(None, "detect") == ""
  assert gate.model_to_rescore(champion_record(0.3), "detect") == "gs://b/models/run-1"
  decision = gate.decide("detect", tuned={"map50": 0.4}, base={"map50": 0.2}, champion=record, rebaseline=True)
  assert decision.passed and decision.reference_name == "base model" and decision.champion_stored == 99.0
  markdown = decision.to_markdown(record)
  assert "Re-baseline: the champion record (caption, cider)" in markdown and "re-scored" not in markdown


def test_undefined_metric_is_not_promoted_and_says_why():
  """mAP is null when the split has no ground-truth box: no comparison, no export, and the reason says so."""
  decision = gate.decide("detect", tuned={"map50": None}, base={"map50": None})
  assert not decision.passed and decision.tuned is None
  assert "tuned model's map50 is undefined" in decision.reason
  assert "| tuned | undefined |" in decision.to_markdown(None)
  record = {"model_uri": "x", "metric": "map50", "value": 0.5, "run_id": "r", "date": "d"}
  assert not gate.decide("detect", tuned={"map50": None}, base={"map50": 0.1}, champion=record,
                         champion_metrics={"map50": 0.5}).passed
  rescored_undefined = gate.decide("detect", tuned={"map50": 0.3}, base={"map50": 0.1}, champion=record,
                                   champion_metrics={"map50": None})
  assert not rescored_undefined.passed and "champion's map50 is undefined" in rescored_undefined.reason


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
