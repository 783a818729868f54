"""The champion record: a small JSON file next to the exported models, read by the gate, written on promotion.

  {"model_uri": ..., "metric": "map50", "value": 0.71, "task": "detect", "run_id": ..., "date": ISO-8601,
   "base_model": ..., "dataset": ...}

Local paths and `gs://` URIs (google-cloud-storage; credentials from the environment). Writes are atomic:
a temporary file renamed into place locally; on GCS an object only appears once its upload completed.
"""
from __future__ import annotations

import datetime
import json
import os
import tempfile

REQUIRED_KEYS = ("model_uri", "metric", "value", "run_id", "date")


def _gcs_blob(uri: str):
  from google.cloud import storage

  bucket, _, name = uri.removeprefix("gs://").partition("/")
  return storage.Client().bucket(bucket).blob(name)


def read(uri: str) -> dict | None:
  """The current champion, or None when there is none yet."""
  if not uri:
    return None
  if uri.startswith("gs://"):
    blob = _gcs_blob(uri)
    if not blob.exists():
      return None
    text = blob.download_as_text()
  else:
    if not os.path.exists(uri):
      return None
    with open(uri) as f:
      text = f.read()
  record = json.loads(text)
  missing = [k for k in REQUIRED_KEYS if k not in record]
  if missing:
    raise ValueError(f"champion record {uri} lacks {missing}; fix or delete it to start a new champion")
  return record


def write(uri: str, record: dict) -> None:
  missing = [k for k in REQUIRED_KEYS if k not in record]
  if missing:
    raise ValueError(f"a champion record needs {missing}")
  text = json.dumps(record, indent=2, sort_keys=True) + "\n"
  if uri.startswith("gs://"):
    _gcs_blob(uri).upload_from_string(text, content_type="application/json")
    return
  directory = os.path.dirname(os.path.abspath(uri))
  os.makedirs(directory, exist_ok=True)
  with tempfile.NamedTemporaryFile("w", dir=directory, prefix=".champion-", delete=False) as f:
    f.write(text)
  os.replace(f.name, uri)


def new_record(*, model_uri: str, metric: str, value: float, task: str, run_id: str, base_model: str,
               dataset: str) -> dict:
  return {"model_uri": model_uri, "metric": metric, "value": float(value), "task": task, "run_id": run_id,
          "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "base_model": base_model, "dataset": dataset}
