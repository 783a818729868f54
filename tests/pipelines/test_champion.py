"""The champion record's generation precondition: of two runs promoting on one record, exactly one wins and
the other is told why (locally and on GCS); a record for another task is never overwritten by accident."""
import json
import os
import threading

import pytest

from pipelines import champion

SPLIT = {"name": "valid", "fingerprint": "sha256:" + "c" * 64, "examples": 120}


def record(run_id, value):
  return champion.new_record(model_uri=f"gs://b/models/{run_id}", metric="map50", value=value, task="detect",
                             run_id=run_id, base_model="paligemma2-3b-pt-224", dataset="gs://b/labelled/",
                             split=SPLIT)


def race(uri, generation):
  """Two runs that read the record at `generation` promote at the same moment; returns {run_id: error}."""
  start = threading.Barrier(2)
  outcome = {}

  def promote(run_id, value):
    start.wait()
    try:
      champion.write(uri, record(run_id, value), if_generation=generation)
      outcome[run_id] = None
    except champion.ChampionChanged as e:
      outcome[run_id] = e

  threads = [threading.Thread(target=promote, args=(f"run-{i}", 0.5 + i / 10)) for i in (1, 2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=60)
  return outcome


def check_one_winner(uri, outcome):
  winners = [run for run, error in outcome.items() if error is None]
  assert len(winners) == 1, outcome
  (loser,) = set(outcome) - set(winners)
  message = str(outcome[loser])
  assert f"champion record {uri} changed since this run read it" in message
  assert f"it now names run {winners[0]}" in message and "does not overwrite" in message
  assert champion.read(uri)["run_id"] == winners[0]


def test_local_record_round_trip_with_generations(tmp_path):
  uri = str(tmp_path / "models" / "champion.json")
  assert champion.read_versioned(uri) == (None, champion.ABSENT)
  champion.write(uri, record("run-1", 0.6), if_generation=champion.ABSENT)  # first champion: must not exist yet
  first, generation = champion.read_versioned(uri)
  assert first["run_id"] == "run-1" and first["split"] == SPLIT and generation.startswith("sha256:")
  with pytest.raises(champion.ChampionChanged, match="it now names run run-1"):
    champion.write(uri, record("run-2", 0.7), if_generation=champion.ABSENT)  # someone was first
  champion.write(uri, record("run-2", 0.7), if_generation=generation)
  second, newer = champion.read_versioned(uri)
  assert second["run_id"] == "run-2" and newer != generation
  with pytest.raises(champion.ChampionChanged):
    champion.write(uri, record("run-3", 0.9), if_generation=generation)  # read before run-2 promoted
  assert champion.read(uri)["run_id"] == "run-2"
  assert os.listdir(tmp_path / "models") == ["champion.json"]  # no temporary or lock file left behind


def test_two_local_promotions_race_and_exactly_one_wins(tmp_path):
  uri = str(tmp_path / "champion.json")
  champion.write(uri, record("run-0", 0.4))
  _, generation = champion.read_versioned(uri)
  check_one_winner(uri, race(uri, generation))


@pytest.fixture
def gcs_with_preconditions(gcs_emulator_with_preconditions, monkeypatch):
  """The emulator with GCS's generation preconditions (tests/conftest.py), this process pointed at it."""
  env, client = gcs_emulator_with_preconditions
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  client.create_bucket("acme-models")
  return client


def test_two_gcs_promotions_race_and_exactly_one_wins(gcs_with_preconditions):
  """(c) On the GCS emulator: both runs read generation G, both promote with if_generation_match=G."""
  uri = "gs://acme-models/paligemma/champion.json"
  assert champion.read_versioned(uri) == (None, champion.ABSENT)
  champion.write(uri, record("run-0", 0.4), if_generation=champion.ABSENT)
  current, generation = champion.read_versioned(uri)
  assert current["run_id"] == "run-0" and int(generation) > 0
  check_one_winner(uri, race(uri, generation))
  _, newer = champion.read_versioned(uri)
  assert newer != generation


def test_first_champion_race_on_gcs(gcs_with_preconditions):
  """No record yet: both create it with if_generation_match=0; the second finds it there."""
  uri = "gs://acme-models/champion.json"
  check_one_winner(uri, race(uri, champion.ABSENT))


def test_champion_step_reads_the_record_and_refuses_another_task(tmp_path):
  """The DAG's first champion step: the model to re-score and the generation promotion must still find."""
  from pipelines import gate, steps

  models = tmp_path / "models"
  models.mkdir()
  outputs = steps.read_champion(task="detect", champion_uri="", export_uri=str(models), rebaseline=False)
  assert outputs.model_uri == "" and json.loads(outputs.champion) == {
      "location": str(models / "champion.json"), "generation": "0", "record": None, "rebaseline": False}
  champion.write(str(models / "champion.json"), record("run-1", 0.6))
  outputs = steps.read_champion(task="detect", champion_uri="", export_uri=str(models), rebaseline=False)
  read = json.loads(outputs.champion)
  assert outputs.model_uri == "gs://b/models/run-1" and read["record"]["run_id"] == "run-1"
  assert read["generation"] == champion.read_versioned(str(models / "champion.json"))[1]
  with pytest.raises(gate.ChampionMismatch, match=f"{models / 'champion.json'} holds a champion for task 'detect'"):
    steps.read_champion(task="caption", champion_uri="", export_uri=str(models), rebaseline=False)
  rebaselined = steps.read_champion(task="caption", champion_uri="", export_uri=str(models),
                                                rebaseline=True)
  assert rebaselined.model_uri == "" and json.loads(rebaselined.champion)["rebaseline"] is True
