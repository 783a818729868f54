"""Atomic publication of an export directory, local or on an object store (gs://, any fsspec URL).

    with atomic_directory(output) as staging:     # write every file under `staging`
      ...
    # on success the files appear at `output`; on error nothing at `output` changes

Local: `staging` is a hidden sibling of `output` (same filesystem), renamed into place at the end; an
existing `output` is swapped with it in one atomic renameat2(RENAME_EXCHANGE) where Linux offers it, else
renamed aside to `.NAME.old-ID` first (kept until the new one is in place, so it can be renamed back).
Object store: `staging` is a local temporary directory; its files are uploaded under a temporary prefix
`OUTPUT.tmp-ID/`, then copied server-side to `OUTPUT/` (a copy creates the final object whole, never a
half-written one) with `manifest.json` last: a directory whose manifest is present is complete. Objects of
a previous export that the new one does not have are deleted, and the temporary prefix is removed.
"""
from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import shutil
import tempfile
import time
import uuid
from typing import Iterator

import fsspec

from components.common.atomic import exchange

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def is_remote(uri: str) -> bool:
  return "://" in uri and not uri.startswith("file://")


@contextlib.contextmanager
def atomic_directory(output: str) -> Iterator[pathlib.Path]:
  if is_remote(output):
    staging = pathlib.Path(tempfile.mkdtemp(prefix="paligemma-export-"))
    try:
      yield staging
      _upload(staging, output)
    finally:
      shutil.rmtree(staging, ignore_errors=True)
    return
  final = pathlib.Path(output.removeprefix("file://")).absolute()
  final.parent.mkdir(parents=True, exist_ok=True)
  staging = pathlib.Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
  try:
    yield staging
    _replace_local(staging, final)
  finally:
    shutil.rmtree(staging, ignore_errors=True)


def _replace_local(staging: pathlib.Path, final: pathlib.Path) -> None:
  staging.chmod(0o755)  # mkdtemp makes it private; the export is meant to be read by others
  if not final.exists():
    os.rename(staging, final)
    return
  if exchange(staging, final):  # one atomic step: `final` is always a whole export, old or new
    shutil.rmtree(staging, ignore_errors=True)  # now holds the previous export
    log.info("replaced the previous export at %s", final)
    return
  # No atomic exchange here (not Linux, or a filesystem without it): two renames. Between them `final`
  # is missing for an instant; the previous export stays whole under `old` and is deleted only once the
  # new one is in place, so a crash in between leaves it there to rename back.
  old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
  os.rename(final, old)
  try:
    os.rename(staging, final)
  except OSError:
    os.rename(old, final)
    raise
  shutil.rmtree(old, ignore_errors=True)
  log.info("replaced the previous export at %s", final)


def _files(staging: pathlib.Path) -> list[str]:
  """Relative paths, manifest last."""
  names = sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())
  return sorted(names, key=lambda n: n == MANIFEST)


def _upload(staging: pathlib.Path, output: str) -> None:
  fs, root = fsspec.core.url_to_fs(output)
  root = root.rstrip("/")
  temp = f"{root}.tmp-{uuid.uuid4().hex[:12]}"
  names = _files(staging)
  total = sum((staging / n).stat().st_size for n in names)
  done, start = 0, time.monotonic()
  for name in names:
    fs.put_file(str(staging / name), f"{temp}/{name}")
    done += (staging / name).stat().st_size
    rate = done / max(time.monotonic() - start, 1e-9)
    log.info("uploaded %s (%.2f/%.2f GB, %.0f MB/s, ETA %.0f s)", name, done / 1e9, total / 1e9, rate / 1e6,
             (total - done) / rate)
  try:
    existing = set(fs.find(root)) if fs.exists(root) else set()
    if f"{root}/{MANIFEST}" in existing:
      fs.rm_file(f"{root}/{MANIFEST}")  # the directory is being replaced: no longer complete
    for name in names[:-1] if names[-1] == MANIFEST else names:
      fs.copy(f"{temp}/{name}", f"{root}/{name}")
    for stale in sorted(existing - {f"{root}/{n}" for n in names} - {f"{root}/{MANIFEST}"}):
      fs.rm_file(stale)
    if names[-1] == MANIFEST:  # last: marks the directory complete
      fs.copy(f"{temp}/{MANIFEST}", f"{root}/{MANIFEST}")
  finally:
    fs.rm(temp, recursive=True)
  log.info("published %d files to %s", len(names), output)
