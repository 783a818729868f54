"""Local paths and `gs://` (through gcsfs) for the converter's input and output.

The converter itself works on local folders: a `gs://` input is copied down to a scratch folder first, and
the output is built in a staging folder and then published file by file. Publishing moves images and
records first, then the JSONL files, then `report.json`; only after that are the files an earlier run
wrote (the images its JSONL files name, its record shards) and this one did not write deleted. Nothing
else in the output folder is touched. A crash therefore leaves either the previous output or the new one
(plus unreferenced extra images), never a half-written file: local files arrive by rename, GCS objects
are only visible once their upload completed.
"""
from __future__ import annotations

import json
import os
import re
import shutil

from components.common.records import RECORDS_DIR

JSONL_FILES = ("train.jsonl", "valid.jsonl", "test.jsonl")
REPORT = "report.json"
TEMP_PREFIX = ".convert-tmp-"
_SHARD_RE = re.compile(rf"^{RECORDS_DIR}/[^/]+-\d{{5}}-of-\d{{5}}\.array_record$")


def is_gcs(path: str) -> bool:
  return str(path).startswith("gs://")


def _gcs():
  import gcsfs  # imported lazily: only gs:// runs need it
  return gcsfs.GCSFileSystem()


def check_locations(src: str, output: str) -> None:
  """The output must not be the input or hold it: publishing would replace or delete source files."""
  def norm(p):
    return p.rstrip("/") + "/" if is_gcs(p) else os.path.realpath(p) + os.sep
  if (is_gcs(src) or os.path.exists(src)) and norm(src).startswith(norm(output)):
    raise ValueError(f"--output {output} is (or contains) the input {src}; write the dataset to a separate folder")


def fetch_input(src: str, scratch: str) -> str:
  """A local path holding `src` (itself when local)."""
  if not is_gcs(src):
    if not os.path.exists(src) and not _looks_like_hub_name(src):
      raise FileNotFoundError(f"input {src} does not exist; give a local folder/file or a gs:// path")
    return src
  fs = _gcs()
  if not fs.exists(src):
    raise FileNotFoundError(f"input {src} does not exist in GCS (or is not readable with these credentials)")
  if fs.isdir(src):
    target = os.path.join(scratch, "input", src.rstrip("/").rsplit("/", 1)[-1])
    fs.get(src.rstrip("/") + "/", target, recursive=True)
    return target
  # A file (a .jsonl, .json or .csv) names its images relative to its folder: fetch the folder.
  folder, name = src.rsplit("/", 1)
  target = os.path.join(scratch, "input", folder.rsplit("/", 1)[-1])
  fs.get(folder + "/", target, recursive=True)
  return os.path.join(target, name)


def _looks_like_hub_name(src: str) -> bool:
  return src.count("/") == 1 and not src.startswith((".", "/"))


def staging_dir(output: str, scratch: str) -> str:
  """Where to build the output: inside a local output (so the final moves are renames), else in scratch."""
  if is_gcs(output):
    path = os.path.join(scratch, "staging")
  else:
    os.makedirs(output, exist_ok=True)
    for name in os.listdir(output):  # staging folders a crashed run left behind
      if name.startswith(TEMP_PREFIX):
        shutil.rmtree(os.path.join(output, name), ignore_errors=True)
    path = os.path.join(output, f"{TEMP_PREFIX}{os.getpid()}")
  os.makedirs(path, exist_ok=True)
  return path


def publish(staging: str, output: str) -> None:
  """Moves every file of `staging` into `output`, then deletes what only the previous run had written."""
  files = []
  for dirpath, _, names in os.walk(staging):
    files += [os.path.relpath(os.path.join(dirpath, n), staging).replace(os.sep, "/") for n in names]
  files.sort(key=lambda f: (2 if f == REPORT else 1 if f in JSONL_FILES else 0, f))
  target = _Target(output)
  previous = target.previous_files()
  for f in files:
    target.put(os.path.join(staging, f), f)
  target.remove(sorted(previous - set(files)))


class _Target:
  """The output folder, local or gs://, as far as publishing needs it."""

  def __init__(self, output: str):
    self.output = output.rstrip("/")
    self.fs = _gcs() if is_gcs(output) else None

  def _path(self, rel: str) -> str:
    return f"{self.output}/{rel}" if self.fs else os.path.join(self.output, rel)

  def _exists(self, rel: str) -> bool:
    return self.fs.exists(self._path(rel)) if self.fs else os.path.exists(self._path(rel))

  def previous_files(self) -> set[str]:
    """Images the previous JSONL files name, and the previous record shards."""
    found = set()
    for name in JSONL_FILES:
      if self._exists(name):
        opener = self.fs.open if self.fs else open
        with opener(self._path(name), "r") as f:
          found |= {json.loads(line)["image"] for line in f if line.strip()}
    records = self._path(RECORDS_DIR)
    if self.fs:
      names = [p.rsplit("/", 1)[-1] for p in self.fs.ls(records)] if self.fs.exists(records) else []
    else:
      names = os.listdir(records) if os.path.isdir(records) else []
    found |= {f"{RECORDS_DIR}/{n}" for n in names if _SHARD_RE.match(f"{RECORDS_DIR}/{n}")}
    return {f for f in found if not f.startswith(("/", "..")) and "/../" not in f}

  def put(self, local: str, rel: str) -> None:
    if self.fs:
      self.fs.put_file(local, self._path(rel))
      return
    path = self._path(rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.replace(local, path)  # atomic on one filesystem (the staging folder lives inside the output)

  def remove(self, rels: list[str]) -> None:
    if self.fs:
      existing = [self._path(r) for r in rels if self._exists(r)]
      if existing:
        self.fs.rm(existing)
      return
    for rel in rels:
      path = self._path(rel)
      if os.path.isfile(path):
        os.remove(path)
        _remove_empty_parents(os.path.dirname(path), self.output)


def _remove_empty_parents(directory: str, stop: str) -> None:
  while os.path.realpath(directory) != os.path.realpath(stop) and os.path.isdir(directory) and not os.listdir(directory):
    os.rmdir(directory)
    directory = os.path.dirname(directory)
