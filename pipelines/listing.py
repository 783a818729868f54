"""A fingerprint of what a dataset URI holds right now, from its listing alone (no file is read).

The pipeline's first step computes it and hands it to convert as a parameter: KFP and Vertex AI form a
task's cache key from its input parameter values (and input artifact ids, and the component's spec), so
convert is served from the cache only while the listing is unchanged, and re-runs (with everything
downstream of its new dataset) as soon as a file is added, removed or rewritten.

- `gs://`: every object under the prefix: name, size, generation (a rewrite is a new generation).
- a local path: every file under the folder: relative name, size, mtime in ns.
- a file (a .jsonl, .csv, .json) names images relative to its folder: the folder is listed, as convert
  fetches it.
- a Hugging Face hub name (`owner/name`): the dataset's current commit.
Anything that cannot be listed gets a fingerprint unique to this run: convert then never comes from the cache.
Plain Python, no kfp: it runs inside the step's container.
"""
from __future__ import annotations

import hashlib
import os
import uuid


def fingerprint(uri: str) -> str:
  """`<n> files, <bytes> bytes, sha256:<hex>` of the listing of `uri` (see the module note)."""
  try:
    entries = _gcs_listing(uri) if uri.startswith("gs://") else _local_listing(uri)
  except _Unlisted as e:
    print(f"[fingerprint] {e}: this run's convert will not be served from the cache", flush=True)
    return f"unlisted {uuid.uuid4().hex}"
  digest = hashlib.sha256()
  for name, size, version in sorted(entries):
    digest.update(f"{name}\t{size}\t{version}\n".encode("utf-8"))
  summary = f"{len(entries)} files, {sum(size for _, size, _ in entries)} bytes, sha256:{digest.hexdigest()}"
  print(f"[fingerprint] {uri}: {summary}", flush=True)
  return summary


class _Unlisted(Exception):
  """`uri` has no listing to fingerprint."""


def _gcs_listing(uri: str) -> list[tuple[str, int, str]]:
  from google.cloud import storage

  bucket_name, _, name = uri.removeprefix("gs://").partition("/")
  bucket = storage.Client().bucket(bucket_name)
  if name and not name.endswith("/") and bucket.get_blob(name) is not None:
    name = name.rsplit("/", 1)[0] if "/" in name else ""  # a file: its folder, as convert fetches it
  prefix = name.rstrip("/") + "/" if name else ""
  entries = [(blob.name[len(prefix):], int(blob.size or 0), str(blob.generation))
             for blob in bucket.list_blobs(prefix=prefix)]
  if not entries:
    raise FileNotFoundError(f"dataset {uri} is empty or does not exist (or is not readable with these "
                            "credentials); check dataset_uri")
  return entries


def _local_listing(path: str) -> list[tuple[str, int, str]]:
  if os.path.isfile(path):
    path = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(path):
    if path.count("/") == 1 and not path.startswith((".", "/")):  # a hub name, as convert reads it
      return [(path, 0, _hub_revision(path))]
    raise FileNotFoundError(f"dataset {path} does not exist; check dataset_uri (a folder, a file, gs:// or a "
                            "Hugging Face dataset name)")
  entries = []
  for directory, _, names in os.walk(path):
    for name in names:
      stat = os.stat(os.path.join(directory, name))
      relative = os.path.relpath(os.path.join(directory, name), path).replace(os.sep, "/")
      entries.append((relative, stat.st_size, str(stat.st_mtime_ns)))
  return entries


def _hub_revision(name: str) -> str:
  try:
    from huggingface_hub import HfApi

    return HfApi().dataset_info(name).sha
  except Exception as e:  # offline, private, rate-limited: no revision to key the cache on
    raise _Unlisted(f"no revision of hub dataset {name} ({type(e).__name__}: {e})") from None
