"""The champion record: a small JSON file next to the exported models, read at the start of a run, written on
promotion.

  {"model_uri": ..., "metric": "map50", "value": 0.71, "task": "detect", "run_id": ..., "date": ISO-8601,
   "base_model": ..., "dataset": ..., "split": {"name": "valid", "fingerprint": "sha256:...", "examples": 240}}

`value` is the champion's score on `split` (the split fingerprint from convert's report.json), the split its
run was judged on. Local paths and `gs://` URIs (google-cloud-storage; credentials from the environment).

Two runs may overlap (a schedule and a manual run): each reads the record and its *generation* when it
starts, and promotion writes only if the record is still at that generation, so at most one of them wins
and the other fails with `ChampionChanged`. On GCS the generation is the object's (`if_generation_match`;
0: must not exist yet). Locally it is the sha256 of the file's bytes ("0": no file), and the compare and
the rename happen under an exclusive `flock` of the record's folder (no lock file is left behind).
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import tempfile

REQUIRED_KEYS = ("model_uri", "metric", "value", "run_id", "date")
ABSENT = "0"  # the generation of a record that does not exist


class ChampionChanged(RuntimeError):
  """The record changed since this run read it: another run promoted in between."""


def _gcs_blob(uri: str):
  from google.cloud import storage

  bucket, _, name = uri.removeprefix("gs://").partition("/")
  return storage.Client().bucket(bucket).blob(name)


def _parse(uri: str, text: str) -> dict:
  record = json.loads(text)
  missing = [k for k in REQUIRED_KEYS if k not in record]
  if missing:
    raise ValueError(f"champion record {uri} lacks {missing}; fix or delete it to start a new champion")
  return record


def read_versioned(uri: str) -> tuple[dict | None, str]:
  """(the current champion or None, its generation) — hand the generation to `write` to promote safely."""
  if not uri:
    return None, ABSENT
  if uri.startswith("gs://"):
    from google.api_core.exceptions import NotFound, PreconditionFailed

    blob = _gcs_blob(uri)
    for _ in range(3):  # a write between the metadata and the content read: read again
      try:
        blob.reload()
      except NotFound:
        return None, ABSENT
      generation = blob.generation  # (a download resets it from response headers)
      try:
        return _parse(uri, blob.download_as_text(if_generation_match=generation)), str(generation)
      except (NotFound, PreconditionFailed):
        continue
    raise ChampionChanged(f"champion record {uri} kept changing while it was read; retry the run")
  data = _local_bytes(uri)
  return (None, ABSENT) if data is None else (_parse(uri, data.decode("utf-8")), _local_generation(data))


def read(uri: str) -> dict | None:
  """The current champion, or None when there is none yet."""
  return read_versioned(uri)[0]


def write(uri: str, record: dict, *, if_generation: str | None = None) -> None:
  """Writes the record atomically; with `if_generation`, only if the record is still at that generation
  (from `read_versioned`), else raises `ChampionChanged` and leaves the record as the other run wrote it."""
  missing = [k for k in REQUIRED_KEYS if k not in record]
  if missing:
    raise ValueError(f"a champion record needs {missing}")
  text = json.dumps(record, indent=2, sort_keys=True) + "\n"
  if uri.startswith("gs://"):
    from google.api_core.exceptions import PreconditionFailed

    condition = {} if if_generation is None else {"if_generation_match": int(if_generation)}
    try:
      _gcs_blob(uri).upload_from_string(text, content_type="application/json", **condition)
    except PreconditionFailed:
      if read(uri) == json.loads(text):  # a retried request whose first attempt had landed: this run won
        return
      raise _changed(uri, if_generation) from None
    return
  directory = os.path.dirname(os.path.abspath(uri))
  os.makedirs(directory, exist_ok=True)
  with _locked(directory) if if_generation is not None else contextlib.nullcontext():
    if if_generation is not None:
      current = _local_bytes(uri)
      if (ABSENT if current is None else _local_generation(current)) != if_generation:
        raise _changed(uri, if_generation)
    with tempfile.NamedTemporaryFile("w", dir=directory, prefix=".champion-", delete=False) as f:
      f.write(text)
    os.replace(f.name, uri)


def _changed(uri: str, generation: str) -> ChampionChanged:
  try:
    now = read(uri)
  except Exception as e:  # noqa: BLE001 - the message below is what matters
    now = {"error": str(e)}
  holder = f"run {now.get('run_id')} ({now.get('metric')} {now.get('value')})" if now else "nobody (it was deleted)"
  return ChampionChanged(
      f"champion record {uri} changed since this run read it (generation {generation}); it now names {holder}. "
      "Another run promoted in between, so this run's comparison is out of date and it does not overwrite "
      "the record; its exported model stays where export put it. The next run compares with the new champion.")


def _local_bytes(uri: str) -> bytes | None:
  try:
    with open(uri, "rb") as f:
      return f.read()
  except FileNotFoundError:
    return None


def _local_generation(data: bytes) -> str:
  return "sha256:" + hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def _locked(directory: str):
  """An exclusive advisory lock on `directory`, released when the process ends however it ends."""
  import fcntl

  fd = os.open(directory, os.O_RDONLY)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX)
    yield
  finally:
    os.close(fd)  # closing releases the lock


def new_record(*, model_uri: str, metric: str, value: float, task: str, run_id: str, base_model: str,
               dataset: str, split: dict | None = None) -> dict:
  return {"model_uri": model_uri, "metric": metric, "value": float(value), "task": task, "run_id": run_id,
          "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "base_model": base_model, "dataset": dataset, "split": split}
