"""A dataset directory is published as one unit (components/convert/storage.py).

convert is killed (SIGKILL) or fails (an injected exception) at every stage of publishing, locally and on
the GCS emulator; after each, a reader (`components.common.datasets.pin`, as the trainer, evaluate and
export read) sees one complete dataset, the old one or the new one, whose report.json, JSONL files and
record shards agree; a rerun then publishes the new one. Also: concurrent converts, the readers' lock
that keeps an old version alive, and an unversioned directory converted in place.
"""
import json
import os
import signal
import subprocess
import sys

import pytest

from components.common import datasets
from components.convert import ConvertConfig, convert, list_shards, read_shard, storage

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPLITS = ("train", "valid", "test")
OLD, NEW = 4, 7  # images (one caption each) in the first and the second dataset

# Runs convert's CLI with one function replaced by one that dies on its N-th call (SIGKILL or an exception).
_KILLER = """
import importlib, os, signal, sys
where, name, when, how = sys.argv[1:5]
module, _, attrs = where.partition(":")
owner = importlib.import_module(module)
for attr in filter(None, attrs.split(".")):
  owner = getattr(owner, attr)
original, calls = getattr(owner, name), [0]
def dying(*args, **kwargs):
  calls[0] += 1
  if calls[0] == int(when):
    if how == "kill":
      os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError("injected failure")
  return original(*args, **kwargs)
setattr(owner, name, dying)
from components.convert.__main__ import main
sys.exit(main(sys.argv[5:]))
"""


def _source(imgs, root, n):
  os.makedirs(root, exist_ok=True)
  for i in range(n):
    imgs.rgb(str(root / f"{i:02d}.jpg"), 40 + i, 30)
  (root / "c.csv").write_text("image,caption\n" + "".join(f"{i:02d}.jpg,caption {i} of {n}\n" for i in range(n)))
  return root


def _argv(src, out):
  return ["--input", str(src), "--format", "csv", "--task", "caption", "--output", str(out), "--workers", "1",
          "--no-progress", "--examples-per-shard", "2"]


def _run_dying(owner, name, when, how, src, out, env=None):
  return subprocess.run([sys.executable, "-c", _KILLER, owner, name, str(when), how, *_argv(src, out)], cwd=REPO,
                        capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


def _agreeing_dataset(read_text, shard_rows, list_names) -> int:
  """Checks that report.json, the JSONL files and the record shards of one dataset root agree; returns its
  number of examples. The three callables read a file's text, a shard's records, and list records/."""
  report = json.loads(read_text("report.json"))
  shards = list_names()
  total = 0
  for split in SPLITS:
    rows = [json.loads(line) for line in read_text(f"{split}.jsonl").splitlines() if line.strip()]
    records = [r for name in shards if name.startswith(f"{split}-") for r in shard_rows(name)]
    assert report["counts"][split] == len(rows) == len(records), (split, report["counts"], len(rows), len(records))
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in records)
    assert {r["suffix"] for r in rows} == {r["suffix"] for r in records}
    total += len(rows)
  suffixes = {json.loads(line)["suffix"] for s in SPLITS for line in read_text(f"{s}.jsonl").splitlines() if line}
  assert all(s.endswith(f"of {total}") for s in suffixes), suffixes  # every row from the same source
  return total


def _local_dataset(root) -> int:
  def read_text(name):
    with open(os.path.join(root, name), encoding="utf-8") as f:
      return f.read()
  count = _agreeing_dataset(read_text, lambda name: read_shard(os.path.join(root, "records", name)),
                            lambda: sorted(os.listdir(os.path.join(root, "records"))))
  for split in SPLITS:  # what the trainer lists
    assert sum(len(read_shard(p)) for p in list_shards(str(root), split)) == json.loads(read_text("report.json"))[
        "counts"][split]
  return count


def _read_local(out) -> int:
  """What a reader sees: the pinned version, and the documented top-level paths (links through CURRENT)."""
  with datasets.pin(str(out)) as data:
    count = _local_dataset(data.root)
  assert _local_dataset(out) == count
  return count


# Stages of a local publication: (function, its call that dies). Into a directory that already holds a
# versioned dataset: writing the version (before its report), the switch of CURRENT (the first
# `_replace_with_link`), the top-level links (the next ones), removing old versions.
LOCAL_STAGES = {
    "writing the version": ("components.convert.core:report_lib", "build", 1),
    "switching CURRENT": ("components.convert.storage", "_replace_with_link", 1),
    "linking the top level": ("components.convert.storage", "_replace_with_link", 2),
    "midway through the links": ("components.convert.storage", "_replace_with_link", 5),
    "removing old versions": ("components.convert.storage:_LocalVersions", "_remove_old_versions", 1),
}


@pytest.mark.parametrize("how", ["raise", pytest.param("kill", marks=pytest.mark.slow)])
@pytest.mark.parametrize("stage", list(LOCAL_STAGES))
def test_local_publication_killed_at_every_stage(stage, how, tmp_path, imgs):
  old, new, out = _source(imgs, tmp_path / "old", OLD), _source(imgs, tmp_path / "new", NEW), tmp_path / "out"
  convert(ConvertConfig(input=str(old), format="csv", task="caption", output=str(out), workers=1, progress=False,
                        examples_per_shard=2))
  assert _read_local(out) == OLD
  done = _run_dying(*LOCAL_STAGES[stage], how, new, out)
  assert done.returncode == (-signal.SIGKILL if how == "kill" else 1), done.stderr[-2000:]
  switched = ("linking the top level", "midway through the links", "removing old versions")
  assert _read_local(out) == (NEW if stage in switched else OLD)
  # A rerun publishes the new dataset and leaves one version: nothing of the failed run stays behind.
  convert(ConvertConfig(input=str(new), format="csv", task="caption", output=str(out), workers=1, progress=False,
                        examples_per_shard=2))
  assert _read_local(out) == NEW
  assert len(os.listdir(out / ".versions")) == 1


def test_readers_keep_their_version_until_they_close_it(tmp_path, imgs):
  src, out = _source(imgs, tmp_path / "src", OLD), tmp_path / "out"
  config = ConvertConfig(input=str(src), format="csv", task="caption", output=str(out), workers=1, progress=False)
  convert(config)
  reader = datasets.pin(str(out))
  convert(config)
  convert(config)  # the reader's version survives both: it is still being read
  assert os.path.isdir(reader.root) and datasets.current_version(str(out)) != reader.version
  assert _local_dataset(reader.root) == OLD and len(os.listdir(out / ".versions")) == 2
  reader.close()
  convert(config)
  assert not os.path.exists(reader.root) and len(os.listdir(out / ".versions")) == 1


def test_a_second_convert_into_the_same_output_fails_and_touches_nothing(tmp_path, imgs):
  src, out = _source(imgs, tmp_path / "src", OLD), tmp_path / "out"
  convert(ConvertConfig(input=str(src), format="csv", task="caption", output=str(out), workers=1, progress=False))
  before = sorted(os.listdir(out / ".versions"))
  lock = storage._take_writer_lock(str(out))  # a first convert, still running
  (out / ".versions" / "v-running").mkdir()  # its staging
  try:
    done = subprocess.run([sys.executable, "-m", "components.convert", *_argv(src, out)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
  finally:
    os.close(lock)
  assert done.returncode == 2 and "Traceback" not in done.stderr
  assert f"another convert is writing to {out} (pid {os.getpid()}" in done.stderr
  assert sorted(os.listdir(out / ".versions")) == sorted(before + ["v-running"])
  assert _read_local(out) == OLD


def test_an_unversioned_directory_becomes_versioned_in_place(tmp_path, imgs):
  src, out = _source(imgs, tmp_path / "src", OLD), tmp_path / "out"
  convert(ConvertConfig(input=str(src), format="csv", task="caption", output=str(out), workers=1, progress=False,
                        layout="plain"))  # as a KFP step writes its artifact (and older converts wrote any output)
  (out / "notes.txt").write_text("mine")
  assert not (out / "CURRENT").exists() and _local_dataset(out) == OLD
  with datasets.pin(str(out)) as data:
    assert data.root == str(out) and data.version is None
  new = _source(imgs, tmp_path / "new", NEW)
  convert(ConvertConfig(input=str(new), format="csv", task="caption", output=str(out), workers=1, progress=False))
  assert _read_local(out) == NEW and (out / "notes.txt").read_text() == "mine"
  assert all(os.path.islink(out / name) for name in storage.TOP_LEVEL)


# ------------------------------------------------------------------------------------------- gs://
@pytest.fixture
def gcs(gcs_emulator_with_preconditions):
  """The emulator, enforcing `ifGenerationMatch` on uploads as GCS does (tests/conftest.py)."""
  env, client = gcs_emulator_with_preconditions
  return client.create_bucket("data"), env


def _read_gcs(bucket, tmp_path) -> int:
  """What a reader sees on gs://: the version CURRENT names, read whole (shards copied down to read them)."""
  current = bucket.blob("out/ds/CURRENT").download_as_text().strip()
  prefix = f"out/ds/{current}"
  local = tmp_path / "shards"
  local.mkdir(exist_ok=True)

  def shard_rows(name):
    path = local / name
    bucket.blob(f"{prefix}/records/{name}").download_to_filename(str(path))
    return read_shard(str(path))

  return _agreeing_dataset(lambda name: bucket.blob(f"{prefix}/{name}").download_as_text(), shard_rows,
                           lambda: sorted(b.name.rsplit("/", 1)[-1]
                                          for b in bucket.client.list_blobs("data", prefix=f"{prefix}/records/")))


# Stages of a gs:// publication: writing the version, uploading it (midway: the third file), switching
# CURRENT, copying the documented top-level paths (before, and midway), removing old versions.
GCS_STAGES = {
    "writing the version": ("components.convert.core:report_lib", "build", 1),
    "midway through the upload": ("gcsfs:GCSFileSystem", "_put_file", 3),
    "switching CURRENT": ("components.convert.storage:_GcsVersions", "_switch_current", 1),
    "copying the top level": ("components.convert.storage:_PlainTarget", "replace_with", 1),
    "midway through the copies": ("gcsfs:GCSFileSystem", "_cp_file", 3),
    "removing old versions": ("components.convert.storage:_GcsVersions", "_remove_old_versions", 1),
}


@pytest.mark.slow
@pytest.mark.parametrize("how", ["raise", "kill"])
@pytest.mark.parametrize("stage", list(GCS_STAGES))
def test_gcs_publication_killed_at_every_stage(stage, how, gcs, tmp_path, imgs):
  bucket, env = gcs
  old, new, out = _source(imgs, tmp_path / "old", OLD), _source(imgs, tmp_path / "new", NEW), "gs://data/out/ds"
  cli = [sys.executable, "-m", "components.convert"]
  first = subprocess.run([*cli, *_argv(old, out)], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, **env})
  assert first.returncode == 0, first.stderr[-2000:]
  assert _read_gcs(bucket, tmp_path) == OLD
  done = _run_dying(*GCS_STAGES[stage], how, new, out, env)
  assert done.returncode == (-signal.SIGKILL if how == "kill" else 1), done.stderr[-2000:]
  switched = ("copying the top level", "midway through the copies", "removing old versions")
  assert _read_gcs(bucket, tmp_path) == (NEW if stage in switched else OLD)
  again = subprocess.run([*cli, *_argv(new, out)], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, **env})
  assert again.returncode == 0, again.stderr[-2000:]
  assert _read_gcs(bucket, tmp_path) == NEW
  top = json.loads(bucket.blob("out/ds/report.json").download_as_text())  # the top-level copies caught up
  assert sum(top["counts"].values()) == NEW


@pytest.mark.slow
def test_gcs_second_convert_to_switch_fails_and_keeps_the_first(gcs, tmp_path, imgs):
  bucket, env = gcs
  old, new, out = _source(imgs, tmp_path / "old", OLD), _source(imgs, tmp_path / "new", NEW), "gs://data/out/ds"
  first = subprocess.run([sys.executable, "-m", "components.convert", *_argv(old, out)], cwd=REPO,
                         capture_output=True, text=True, timeout=300, env={**os.environ, **env})
  assert first.returncode == 0, first.stderr[-2000:]
  # This convert started before another one published: CURRENT changes under it just before its switch.
  racer = """
import sys
from google.cloud import storage as gcs
from components.convert import storage
switch = storage._GcsVersions._switch_current
def other_convert_published_first(self):
  gcs.Client().bucket("data").blob("out/ds/CURRENT").upload_from_string(
      gcs.Client().bucket("data").blob("out/ds/CURRENT").download_as_text())
  return switch(self)
storage._GcsVersions._switch_current = other_convert_published_first
from components.convert.__main__ import main
sys.exit(main(sys.argv[1:]))
"""
  done = subprocess.run([sys.executable, "-c", racer, *_argv(new, out)], cwd=REPO, capture_output=True, text=True,
                        timeout=300, env={**os.environ, **env})
  assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
  assert "another convert published gs://data/out/ds while this one was running" in done.stderr
  assert _read_gcs(bucket, tmp_path) == OLD
  versions = {b.name.split("/")[3] for b in bucket.client.list_blobs("data", prefix="out/ds/.versions/")}
  assert len(versions) == 1  # the loser removed its own version, nothing else
