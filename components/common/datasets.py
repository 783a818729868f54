"""Reading a dataset directory (written by components.convert) as one version, from start to end.

A dataset directory written by `python -m components.convert` is versioned (docs/ARCHITECTURE.md, "A
dataset directory"): every convert writes a complete folder `DIR/.versions/<version>/` and then switches
the pointer `DIR/CURRENT` to it in one step. `DIR/train.jsonl`, `DIR/images/`, ... stay readable (locally
links through CURRENT, on gs:// copies of the current version), but a reader that opens several files
should resolve the version once and read everything from there, so that a convert running meanwhile can
never give it half of one version and half of another:

    with pin("gs://b/ds") as data:           # or a local path
      data.root                             # "gs://b/ds/.versions/v-20261101T120000Z-1a2b3c4d"
      data.version                          # "v-20261101T120000Z-1a2b3c4d" (None: an unversioned DIR)

`DIR/CURRENT` is a symbolic link to `.versions/<version>` locally and an object holding that text on
gs:// (seen as a plain file through a FUSE mount); a directory without it (written by a KFP step into its
own artifact, or by an older convert) is read as it is. Locally, a pinned version also holds a shared
lock on `<version>/.readers`, so that no later convert deletes it while it is being read; on gs:// a
superseded version is kept for `RETAIN_SECONDS` (convert's side).
"""
from __future__ import annotations

import dataclasses
import fcntl
import os

import fsspec

CURRENT = "CURRENT"
VERSIONS = ".versions"
READERS_LOCK = ".readers"
RETAIN_SECONDS = 24 * 3600  # how long a superseded version stays on gs:// (no reader locks there)


def join(directory: str, name: str) -> str:
  return f"{directory.rstrip('/')}/{name}" if "://" in directory else os.path.join(directory, name)


def current_version(data_dir: str) -> str | None:
  """The name of the version DIR/CURRENT points to, or None for an unversioned (or missing) directory."""
  pointer = join(data_dir, CURRENT)
  if "://" not in data_dir:
    if os.path.islink(pointer):
      target = os.readlink(pointer)
    elif os.path.isfile(pointer):  # a gs:// dataset seen through a FUSE mount
      with open(pointer, encoding="utf-8") as f:
        target = f.read()
    else:
      return None
  else:
    fs, path = fsspec.core.url_to_fs(pointer)
    try:
      target = fs.cat_file(path).decode("utf-8")
    except FileNotFoundError:
      return None
  target = target.strip().rstrip("/")
  prefix = f"{VERSIONS}/"
  if not target.startswith(prefix) or "/" in target[len(prefix):] or target.endswith("/.."):
    raise ValueError(f"{pointer} points to {target!r}, not to a folder in {VERSIONS}/; re-run components.convert")
  return target[len(prefix):]


@dataclasses.dataclass
class DatasetVersion:
  """One version of a dataset directory, held (locally) until `close()`."""
  data_dir: str  # the dataset directory as given
  root: str  # where this version's files are: DIR/.versions/<version>, or DIR itself when unversioned
  version: str | None
  _lock_fd: int | None = None

  def close(self) -> None:
    if self._lock_fd is not None:
      os.close(self._lock_fd)  # releases the shared lock
      self._lock_fd = None

  def __enter__(self) -> DatasetVersion:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def __del__(self):
    self.close()


def pin(data_dir: str, version: str | None = None) -> DatasetVersion:
  """The current version of `data_dir` (or the given `version` of it), held for reading until closed."""
  data_dir = str(data_dir)
  for _ in range(10):  # a convert may remove the version between reading CURRENT and locking it: read again
    name = version or current_version(data_dir)
    if name is None:
      return DatasetVersion(data_dir, data_dir, None)
    root = join(join(data_dir, VERSIONS), name)
    if "://" in data_dir:
      return DatasetVersion(data_dir, root, name)
    lock = os.path.join(root, READERS_LOCK)
    try:
      fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
      if os.path.isdir(root):  # a version without its readers' lock file (copied by hand): read it unheld
        return DatasetVersion(data_dir, root, name)
      if version is not None:
        raise FileNotFoundError(f"version {version} of {data_dir} is gone ({root}); use the current one") from None
      continue  # removed meanwhile: CURRENT points to a newer version now
    except OSError:  # unreadable lock file (a read-only copy): read without holding the version
      return DatasetVersion(data_dir, root, name)
    fcntl.flock(fd, fcntl.LOCK_SH)
    try:
      still_there = os.stat(lock).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
      still_there = False
    if still_there:
      return DatasetVersion(data_dir, root, name, fd)
    os.close(fd)
  raise RuntimeError(f"{data_dir}: its current version kept changing while being opened; try again")
