"""Where the converter reads its input and how it publishes a dataset directory as one unit, local or gs://.

Input: a `gs://` input is copied down to a scratch folder first; a local one is read in place.

Output (docs/ARCHITECTURE.md, "A dataset directory"): `open_output(DIR, ...)` gives a staging folder to
write the whole dataset into; `publish()` then makes it the current version in one step.

versioned (the CLI; any directory someone may read while it is rewritten):
    DIR/.versions/<version>/   a complete dataset: {train,valid,test}.jsonl, images/, records/, report.json
    DIR/CURRENT                the version readers use: a symbolic link to .versions/<version> (local), an
                               object holding that text (gs://), switched last: an atomic rename locally, a
                               write conditioned on the generation the convert started from on gs://
    DIR/train.jsonl, ...       the documented paths, kept readable: locally links through CURRENT (so they
                               switch with it), on gs:// copies of the current version made after the switch
                               (gs:// has no links; those copies are not switched as one unit)
  Stages: write the version -> switch CURRENT -> top-level paths -> remove old versions. A crash before
  the switch leaves the previous dataset current (and an unused version, removed by the next convert);
  after it, the new one. Readers resolve CURRENT once (`components.common.datasets.pin`). Old versions
  go when no reader can still be inside them: locally when no reader holds the shared lock on their
  `.readers` file (readers take it when they pin a version), on gs:// (no locks) once superseded for
  `datasets.RETAIN_SECONDS`.
  Two converts into one DIR: locally the second fails at once (the first holds `DIR/.convert.lock`); on
  gs:// both write their own version and the second to switch fails (CURRENT changed since it started);
  either way the loser says that another convert is writing there, and nobody's files are touched.

plain (a KFP step's own output artifact: nobody reads it before KFP publishes it after the task):
    the files directly in DIR, moved (local) or uploaded (gs://) from the staging folder, images and records
    first, then the JSONL files, then report.json; files only the previous run had written are deleted last.
"""
from __future__ import annotations

import datetime
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import socket
import time

from components.common import atomic, datasets
from components.common.datasets import CURRENT, READERS_LOCK, VERSIONS
from components.common.records import RECORDS_DIR

log = logging.getLogger("components.convert")

JSONL_FILES = ("train.jsonl", "valid.jsonl", "test.jsonl")
REPORT = "report.json"
TOP_LEVEL = ("images", RECORDS_DIR, *JSONL_FILES, REPORT)  # the documented paths, data first, report last
WRITER_LOCK = ".convert.lock"
SUPERSEDED = ".superseded"  # gs://: written into a version when CURRENT leaves it
TEMP_PREFIX = ".convert-tmp-"
_SHARD_RE = re.compile(rf"^{RECORDS_DIR}/[^/]+-\d{{5}}-of-\d{{5}}\.array_record$")


class OutputBusyError(RuntimeError):
  """Another convert is writing the same output directory."""


def is_gcs(path: str) -> bool:
  return str(path).startswith("gs://")


def _gcs():
  import gcsfs  # imported lazily: only gs:// runs need it
  return gcsfs.GCSFileSystem()


# ---------------------------------------------------------------------------------------------- input
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


# ---------------------------------------------------------------------------------------------- output
def open_output(output: str, scratch: str, versioned: bool = True):
  """The output being written: `.staging` (a local folder to write the dataset into), `.publish()`,
  `.close()` (releases the output; removes the staging folder unless published). See the module note."""
  if not versioned:
    return _Plain(output, scratch)
  return _GcsVersions(output, scratch) if is_gcs(output) else _LocalVersions(output)


def new_version_name() -> str:
  """`v-<UTC time>-<random>`: sorts by age, unique across concurrent converts."""
  return f"v-{datetime.datetime.now(datetime.timezone.utc):%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(4)}"


def staged_files(staging: str) -> list[str]:
  """Relative '/'-paths of every file in `staging`: images and records first, then the JSONL files, then
  report.json (readers of the plain layout and of gs:// top-level copies see the report last)."""
  files = []
  for dirpath, _, names in os.walk(staging):
    files += [os.path.relpath(os.path.join(dirpath, n), staging).replace(os.sep, "/") for n in names]
  files = [f for f in files if f != READERS_LOCK]
  return sorted(files, key=lambda f: (2 if f == REPORT else 1 if f in JSONL_FILES else 0, f))


def _take_writer_lock(output: str) -> int:
  """An exclusive lock on DIR/.convert.lock for this process (the kernel drops it if the process dies)."""
  path = os.path.join(output, WRITER_LOCK)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    holder = os.read(fd, 200).decode("utf-8", "replace").strip()
    os.close(fd)
    raise OutputBusyError(f"another convert is writing to {output} ({holder or 'it holds ' + path}); wait for it "
                          "to finish or choose another --output") from None
  os.ftruncate(fd, 0)
  stamp = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%dT%H:%M:%SZ}"
  os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {stamp}".encode())
  return fd


class _LocalVersions:
  """A versioned local dataset directory (the module note): write .versions/<v>/, switch CURRENT, link."""

  def __init__(self, output: str):
    self.output = os.path.abspath(output)
    os.makedirs(self.output, exist_ok=True)
    self._lock = _take_writer_lock(self.output)
    self.version = new_version_name()
    self.staging = os.path.join(self.output, VERSIONS, self.version)
    self.published = False
    try:
      os.makedirs(self.staging)
    except BaseException:
      self.close()
      raise

  def publish(self) -> None:
    open(os.path.join(self.staging, READERS_LOCK), "w").close()  # readers hold it shared while they read
    self._switch_current()
    self.published = True
    self._link_top_level()
    self._remove_old_versions()

  def close(self) -> None:
    if not self.published:
      shutil.rmtree(self.staging, ignore_errors=True)
    if self._lock is not None:
      os.close(self._lock)
      self._lock = None

  def _switch_current(self) -> None:
    """CURRENT -> .versions/<v>: a new link renamed over the old one, the one step that publishes."""
    _replace_with_link(os.path.join(self.output, CURRENT), f"{VERSIONS}/{self.version}")

  def _link_top_level(self) -> None:
    """DIR/train.jsonl -> CURRENT/train.jsonl, ...: made once, they follow CURRENT from then on. A directory
    written by an older convert has the real files there; they are replaced (a folder in one exchange)."""
    for name in TOP_LEVEL:
      _replace_with_link(os.path.join(self.output, name), f"{CURRENT}/{name}")

  def _remove_old_versions(self) -> None:
    """Every version but the current one that no reader holds (and leftovers of older converts)."""
    versions = os.path.join(self.output, VERSIONS)
    for name in sorted(os.listdir(versions)):
      if name == self.version:
        continue
      path = os.path.join(versions, name)
      fd = None
      if not name.startswith(".trash-"):
        try:
          fd = os.open(os.path.join(path, READERS_LOCK), os.O_RDONLY)
          fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except FileNotFoundError:
          fd = None  # never published (a convert that stopped): nobody can be reading it
        except BlockingIOError:
          os.close(fd)
          log.info("keeping version %s of %s: a reader is using it", name, self.output)
          continue
        trash = os.path.join(versions, f".trash-{name}")
        os.rename(path, trash)  # out of readers' reach before the slow delete
        path = trash
      if fd is not None:
        os.close(fd)
      shutil.rmtree(path, ignore_errors=True)
    for name in os.listdir(self.output):  # staging folders of converts before versioning
      if name.startswith(TEMP_PREFIX):
        shutil.rmtree(os.path.join(self.output, name), ignore_errors=True)


def _replace_with_link(path: str, target: str) -> None:
  """Makes `path` a symbolic link to `target` in one step (a folder there is swapped out, then deleted)."""
  if os.path.islink(path) and os.readlink(path) == target:
    return
  tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-{secrets.token_hex(4)}")
  os.symlink(target, tmp)
  if os.path.isdir(path) and not os.path.islink(path):
    if not atomic.exchange(tmp, path):  # no atomic swap here: the folder is missing for an instant
      os.rename(path, f"{tmp}.old")
      os.rename(tmp, path)
      tmp = f"{tmp}.old"
    shutil.rmtree(tmp)
    return
  os.replace(tmp, path)


class _GcsVersions:
  """A versioned dataset directory on gs:// (the module note): upload .versions/<v>/, switch CURRENT with a
  generation precondition, copy the documented paths to the top level, remove long-superseded versions."""

  def __init__(self, output: str, scratch: str):
    from google.cloud import storage  # imported lazily: only gs:// runs need it

    self.output = output.rstrip("/")
    self.fs = _gcs()
    self.staging = os.path.join(scratch, "staging")
    os.makedirs(self.staging, exist_ok=True)
    self.version = new_version_name()
    self.prefix = f"{self.output}/{VERSIONS}/{self.version}"
    bucket, _, name = self.output[len("gs://"):].partition("/")
    self._pointer = storage.Client().bucket(bucket).blob(f"{name}/{CURRENT}".lstrip("/"))
    self._previous, self._generation = self._read_pointer()
    self.published = False

  def _read_pointer(self) -> tuple[str | None, int]:
    """(the version CURRENT names now, its generation; 0 when there is none: the write must then create it)."""
    from google.api_core import exceptions as gexc

    try:
      self._pointer.reload()
      generation = int(self._pointer.generation)
      text = self._pointer.download_as_text(if_generation_match=generation)
    except gexc.NotFound:
      return None, 0
    return text.strip().rsplit("/", 1)[-1], generation

  def publish(self) -> None:
    files = staged_files(self.staging)
    self.fs.pipe_file(f"{self.prefix}/.started", _now().encode())  # first: dates a version that never finishes
    self.fs.put([os.path.join(self.staging, rel) for rel in files], [f"{self.prefix}/{rel}" for rel in files])
    self._switch_current()
    self.published = True
    if self._previous:
      self.fs.pipe_file(f"{self.output}/{VERSIONS}/{self._previous}/{SUPERSEDED}", _now().encode())
    _PlainTarget(self.output, self.fs).replace_with(  # the documented paths: server-side copies
        files, lambda rels: self.fs.copy([f"{self.prefix}/{r}" for r in rels], [f"{self.output}/{r}" for r in rels]))
    self._remove_old_versions()

  def close(self) -> None:
    if not self.published:
      self.fs.invalidate_cache()
      if self.fs.exists(self.prefix):
        self.fs.rm(self.prefix, recursive=True)

  def _switch_current(self) -> None:
    from google.api_core import exceptions as gexc

    try:
      self._pointer.upload_from_string(f"{VERSIONS}/{self.version}\n", content_type="text/plain",
                                       if_generation_match=self._generation)
    except gexc.PreconditionFailed:
      raise OutputBusyError(f"another convert published {self.output} while this one was running "
                            f"({self.output}/{CURRENT} changed); its dataset stays, this one is discarded. Rerun "
                            "to replace it") from None

  def _remove_old_versions(self) -> None:
    """Versions other than the current one, superseded (or, never published, started) long enough ago."""
    self.fs.invalidate_cache()
    root = f"{self.output}/{VERSIONS}"
    now = time.time()
    for path in self.fs.ls(root, detail=False):
      name = path.rstrip("/").rsplit("/", 1)[-1]
      if name == self.version:
        continue
      for marker in (SUPERSEDED, ".started"):
        try:
          modified = self.fs.modified(f"{root}/{name}/{marker}").timestamp()
          break
        except FileNotFoundError:
          continue
      else:
        modified = 0.0  # no marker at all: not written by this convert's protocol
      if now - modified > datasets.RETAIN_SECONDS:
        self.fs.rm(f"{root}/{name}", recursive=True)


def _now() -> str:
  return f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%dT%H:%M:%S.%fZ}\n"


class _Plain:
  """The plain layout (a KFP step's own artifact): staged, then moved or uploaded file by file."""

  def __init__(self, output: str, scratch: str):
    self.output = output
    self._lock = None
    if is_gcs(output):
      self.staging = os.path.join(scratch, "staging")
    else:
      os.makedirs(output, exist_ok=True)
      self._lock = _take_writer_lock(output)
      for name in os.listdir(output):  # staging folders a crashed run left behind (we hold the writer lock)
        if name.startswith(TEMP_PREFIX):
          shutil.rmtree(os.path.join(output, name), ignore_errors=True)
      self.staging = os.path.join(output, f"{TEMP_PREFIX}{os.getpid()}")  # the final moves are renames
    os.makedirs(self.staging, exist_ok=True)

  def publish(self) -> None:
    target = _PlainTarget(self.output, _gcs() if is_gcs(self.output) else None)
    target.replace_with(staged_files(self.staging), lambda rels: target.put(self.staging, rels))

  def close(self) -> None:
    if os.path.isdir(self.staging):
      shutil.rmtree(self.staging, ignore_errors=True)
    if self._lock is not None:
      os.close(self._lock)
      self._lock = None


class _PlainTarget:
  """A folder with the dataset files directly in it, local or gs://, as far as publishing needs it."""

  def __init__(self, output: str, fs=None):
    self.output = output.rstrip("/")
    self.fs = fs

  def _path(self, rel: str) -> str:
    return f"{self.output}/{rel}" if self.fs else os.path.join(self.output, rel)

  def _exists(self, rel: str) -> bool:
    return self.fs.exists(self._path(rel)) if self.fs else os.path.exists(self._path(rel))

  def replace_with(self, files: list[str], put) -> None:
    """`put(rels)` for the data files, then the JSONL files, then report.json (`files` in that order); then
    deletes what only the previous dataset had written."""
    previous = self.previous_files()
    for group in ([f for f in files if f not in (*JSONL_FILES, REPORT)], [f for f in files if f in JSONL_FILES],
                  [f for f in files if f == REPORT]):
      if group:
        put(group)
    self.remove(sorted(previous - set(files)))

  def previous_files(self) -> set[str]:
    """Images the previous JSONL files name, and the previous record shards."""
    if self.fs:
      self.fs.invalidate_cache()
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

  def put(self, staging: str, rels: list[str]) -> None:
    if self.fs:
      self.fs.put([os.path.join(staging, r) for r in rels], [self._path(r) for r in rels])
      return
    for rel in rels:
      path = self._path(rel)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      os.replace(os.path.join(staging, rel), path)  # atomic on one filesystem (staging lives inside the output)

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
