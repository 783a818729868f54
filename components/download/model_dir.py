"""A model directory being written: local, or gs:// with the files staged locally and then uploaded.

It reads the manifest of an earlier run, tells which files are still intact (local: sha256 of the bytes;
gs://: the object's crc32c, so 55 GB are not read back), uploads what changed and writes the manifest.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os

from components.download import files, gcs

MANIFEST, MODEL_JSON, TOKENIZER = "manifest.json", "model.json", "tokenizer.model"

log = logging.getLogger(__name__)


class ModelDir:
  """Output directory `output`; for gs:// the files are staged under `cache_dir` first."""

  def __init__(self, output: str, cache_dir: str | None):
    self.uri = output.rstrip("/")
    self.remote = output.startswith("gs://")
    if self.remote:
      cache = cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "paligemma_pipelines")
      self.dir = os.path.join(cache, "staging", hashlib.sha256(self.uri.encode()).hexdigest()[:16])
      self._gcs = gcs.client()
    else:
      self.dir = os.path.abspath(output)
    os.makedirs(self.dir, exist_ok=True)

  def local(self, name: str) -> str:
    return os.path.join(self.dir, name)

  def read_manifest(self) -> dict:
    manifest = self._previous_json(MANIFEST)
    if manifest is None:
      log.warning("ignoring unreadable %s in %s", MANIFEST, self.uri)
      manifest = {}
    return manifest if isinstance(manifest.get("files"), dict) else {"files": {}}

  def previous_model_json(self, checkpoint: str) -> dict | None:
    """The model.json already in DIR, if it describes `checkpoint`."""
    model_json = self._previous_json(MODEL_JSON)
    return model_json if model_json is not None and model_json.get("checkpoint") == checkpoint else None

  def _previous_json(self, name: str) -> dict | None:
    """DIR's file `name` parsed: {} when it is absent or empty, None when it is not valid JSON."""
    text = gcs.read_text(f"{self.uri}/{name}", self._gcs) if self.remote else read_if_file(self.local(name))
    try:
      return json.loads(text) if text else {}
    except json.JSONDecodeError:
      return None

  def lookup(self, manifest: dict, key: dict, name: str | None = None) -> tuple[str | None, bool]:
    """(name of the file in DIR from the same source whose bytes still match the manifest, or None;
    whether such a file is listed but changed). `name` None: the checkpoint, whatever its name. A changed
    file may share its bytes with a client cache (hard link), so it is then fetched bypassing the caches."""
    stale = False
    for file_name, entry in manifest["files"].items():
      if name is None and file_name in (TOKENIZER, MODEL_JSON):
        continue
      if name in (None, file_name) and entry.get("source") == key["source"] and entry.get("dtype") == key["dtype"]:
        if self._matches(file_name, entry):
          log.info("%s is already in %s and verified; not downloading it again", file_name, self.uri)
          return file_name, False
        log.warning("%s in %s no longer matches its manifest; fetching it again", file_name, self.uri)
        stale = not self.remote
    return None, stale

  def _matches(self, name: str, entry: dict) -> bool:
    if self.remote:  # the object's crc32c, from its metadata: no need to read 55 GB back
      return entry.get("crc32c") is not None and gcs.crc32c_of(f"{self.uri}/{name}", self._gcs) == entry["crc32c"]
    path = self.local(name)
    if not os.path.isfile(path) or os.path.getsize(path) != entry.get("size"):
      return False
    return files.digest(path).sha256 == entry.get("sha256")

  def publish(self, name: str, entry: dict) -> None:
    """Uploads a staged file to gs:// unless the same bytes are there already."""
    if not self.remote:
      return
    uri = f"{self.uri}/{name}"
    if gcs.crc32c_of(uri, self._gcs) != entry["crc32c"]:
      gcs.upload(self.local(name), uri, self._gcs)

  def write_manifest(self, manifest: dict) -> None:
    files.write_json_atomic(self.local(MANIFEST), manifest)
    if self.remote:
      gcs.upload(self.local(MANIFEST), f"{self.uri}/{MANIFEST}", self._gcs)


def read_if_file(path: str) -> str | None:
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return f.read()
