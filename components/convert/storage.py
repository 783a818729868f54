"""Local paths and `gs://` (through gcsfs) for the converter's input and output.

The converter itself works on local folders: a `gs://` input is copied down to a scratch folder first, and
the output is built in a local staging folder and then published file by file. Publishing moves images and
records first, then the JSONL files, then `report.json`; only after that are files of an earlier run that
this one no longer writes deleted. A crash therefore leaves either the previous output or the new one
(plus unreferenced extra images), never a half-written file: local files arrive by rename, GCS objects are
only visible once their upload completed.
"""
from __future__ import annotations

import os
import shutil

_LAST = ("train.jsonl", "valid.jsonl", "test.jsonl")
_VERY_LAST = "report.json"
TEMP_PREFIX = ".convert-tmp-"


def is_gcs(path: str) -> bool:
  return str(path).startswith("gs://")


def _gcs():
  import gcsfs  # imported lazily: only gs:// runs need it
  return gcsfs.GCSFileSystem()


def fetch_input(src: str, scratch: str) -> str:
  """A local path holding `src` (itself when local)."""
  if not is_gcs(src):
    if not os.path.exists(src) and not _looks_like_hub_name(src):
      raise FileNotFoundError(f"input {src} does not exist; give a local folder/file or a gs:// path")
    return src
  fs = _gcs()
  if not fs.exists(src):
    raise FileNotFoundError(f"input {src} does not exist in GCS (or is not readable with these credentials)")
  target = os.path.join(scratch, "input", src[len("gs://"):].rstrip("/").rsplit("/", 1)[-1])
  if fs.isdir(src):
    fs.get(src.rstrip("/") + "/", target, recursive=True)
  else:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    fs.get(src, target)
  return target


def _looks_like_hub_name(src: str) -> bool:
  return src.count("/") == 1 and not src.startswith((".", "/"))


def _publish_order(staging: str) -> list[str]:
  files = []
  for dirpath, _, names in os.walk(staging):
    files += [os.path.relpath(os.path.join(dirpath, n), staging).replace(os.sep, "/") for n in names]
  rank = lambda f: 2 if f == _VERY_LAST else 1 if f in _LAST else 0  # noqa: E731
  return sorted(files, key=lambda f: (rank(f), f))


def publish(staging: str, output: str, managed_dirs=("images", "records")) -> None:
  """Moves every file of `staging` into `output`, then deletes what an earlier run left in `managed_dirs`."""
  files = _publish_order(staging)
  keep = set(files)
  if is_gcs(output):
    fs = _gcs()
    for f in files:
      fs.put_file(os.path.join(staging, f), f"{output.rstrip('/')}/{f}")
    for d in managed_dirs:
      base = f"{output.rstrip('/')}/{d}"
      stale = [p for p in (fs.find(base) if fs.exists(base) else []) if _gcs_rel(p, output) not in keep]
      if stale:
        fs.rm(stale)
    return
  os.makedirs(output, exist_ok=True)
  for f in files:
    target = os.path.join(output, f)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.replace(os.path.join(staging, f), target)  # atomic on one filesystem (staging lives inside output)
  for d in managed_dirs:
    for dirpath, _, names in os.walk(os.path.join(output, d)):
      for n in names:
        path = os.path.join(dirpath, n)
        if os.path.relpath(path, output).replace(os.sep, "/") not in keep:
          os.remove(path)
  _remove_empty_dirs([os.path.join(output, d) for d in managed_dirs])


def _gcs_rel(object_path: str, output: str) -> str:
  """`bucket/out/images/a.jpg` (as gcsfs lists it) -> `images/a.jpg` for output `gs://bucket/out`."""
  prefix = output[len("gs://"):].rstrip("/") + "/"
  return object_path[len(prefix):] if object_path.startswith(prefix) else object_path


def _remove_empty_dirs(roots: list[str]) -> None:
  for root in roots:
    for dirpath, _, _ in sorted(os.walk(root), key=lambda t: -len(t[0])):
      if dirpath != root and not os.listdir(dirpath):
        os.rmdir(dirpath)


def staging_dir(output: str, scratch: str) -> str:
  """Where to build the output: inside a local output (so the final moves are renames), else in scratch."""
  if is_gcs(output):
    path = os.path.join(scratch, "staging")
  else:
    os.makedirs(output, exist_ok=True)
    clean_stale_temps(output)
    path = os.path.join(output, f"{TEMP_PREFIX}{os.getpid()}")
  os.makedirs(path, exist_ok=True)
  return path


def clean_stale_temps(output: str) -> None:
  """Staging folders that a crashed run left behind."""
  for name in os.listdir(output):
    if name.startswith(TEMP_PREFIX):
      shutil.rmtree(os.path.join(output, name), ignore_errors=True)
