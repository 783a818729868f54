"""Orbax checkpoints of a run that prove themselves: each step carries a checksum manifest, checked on restore.

  WORKDIR/checkpoints/<step>/state            trainable params, LoRA adapters, optimizer state, step, rng
  WORKDIR/checkpoints/<step>/data             the grain iterator state (JSON, the same on every host)
  WORKDIR/checkpoints/<step>/checksums.json   {"step", "files": {path: {"size", "crc32c"}}}, written last
  WORKDIR/checkpoints_set_aside/<step>[-N]    steps that failed verification or restore (renamed, not deleted)

Frozen weights are not saved: they are the init checkpoint (or the seeded random init) named in
`WORKDIR/config.json`. Kept: the last `keep` checkpoints (at least 2, so a damaged latest one has a
verified one to fall back to; config.validate checks it) plus the one with the best validation loss.

Saves are asynchronous (device arrays are copied to host before `save` returns, so the next train step may
reuse their buffers). A step folder is only visible once orbax finished it; `poll()` then writes its
manifest in a background thread (crc32c of every file: read back locally, the objects' own crc32c on
gs://), so a manifest only ever describes a completed save. Orbax has no checksums of its own to use.

Restoring (`restore_latest`, `restore_for_reading`) verifies the newest step first; a step whose files do
not match its manifest, that has no manifest while others do, or that orbax cannot restore is skipped with
one log line naming it and why (the trainer also sets it aside), and the next older step is tried. A
workdir written before manifests existed (no step has one) is restored unverified, with a warning.
"""
from __future__ import annotations

import base64
import datetime
import json
import logging
import os
import struct
import threading

import fsspec
import google_crc32c
import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers as policies

from components.common.atomic import write_json_atomic

VAL_LOSS = "val_loss"
MANIFEST = "checksums.json"
SET_ASIDE_DIR = "checkpoints_set_aside"
_READ_BYTES = 2**24

log = logging.getLogger("components.finetune")


class CheckpointError(ValueError):
  """No checkpoint of a workdir can be used (bad input, like any unreadable file); the message lists what was
  found."""


def checkpoint_dir(workdir: str) -> str:
  """WORKDIR/checkpoints; a local workdir made absolute (orbax rejects relative paths: `--workdir runs/a`)."""
  return os.path.join(workdir if "://" in workdir else os.path.abspath(workdir), "checkpoints")


def step_dir(workdir: str, step: int) -> str:
  return os.path.join(checkpoint_dir(workdir), str(step))


# ------------------------------------------------------------------------------------------ the manifest
def _crc32c_b64(value: int) -> str:
  """GCS's encoding of a crc32c (base64 of the big-endian 4 bytes): a manifest made locally checks on gs://."""
  return base64.b64encode(struct.pack(">I", value)).decode()


def _file_sums(directory: str) -> dict[str, dict]:
  """{path relative to `directory`: {"size", "crc32c"}} of every file below it, the manifest excepted.

  Local files are read; objects on gs:// report the crc32c the store computed on upload.
  """
  fs, root = fsspec.core.url_to_fs(directory)
  root = root.rstrip("/")
  sums = {}
  for path, info in sorted(fs.find(root, detail=True).items()):
    rel = path[len(root) + 1:]
    if rel == MANIFEST:
      continue
    crc = info.get("crc32c")
    if crc is None:  # a local file (or a store that keeps no crc32c): read the bytes
      checksum = google_crc32c.Checksum()
      with fs.open(path, "rb") as f:
        while chunk := f.read(_READ_BYTES):
          checksum.update(chunk)
      crc = _crc32c_b64(int.from_bytes(checksum.digest(), "big"))
    sums[rel] = {"size": int(info["size"]), "crc32c": crc}
  return sums


def write_manifest(directory: str, step: int) -> None:
  created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  write_json_atomic(os.path.join(directory, MANIFEST), {"step": step, "created": created,
                                                        "files": _file_sums(directory)})


def _has_manifest(directory: str) -> bool:
  fs, path = fsspec.core.url_to_fs(os.path.join(directory, MANIFEST))
  return fs.exists(path)


def verify(directory: str) -> str | None:
  """None when every file of the step matches its manifest, else the first problem, in words."""
  fs, root = fsspec.core.url_to_fs(directory)
  if not fs.isdir(root):
    return "its folder is missing"
  try:
    with fs.open(os.path.join(root, MANIFEST), "rb") as f:
      expected = json.load(f)["files"]
  except FileNotFoundError:
    return f"it has no {MANIFEST} (the run stopped before the save was verified)"
  except (ValueError, KeyError, TypeError):
    return f"its {MANIFEST} is unreadable"
  try:
    found = _file_sums(directory)
  except OSError as e:
    return f"its files cannot be read ({e})"
  for rel, want in expected.items():
    got = found.get(rel)
    if got is None:
      return f"{rel} is missing"
    if got["size"] != want["size"]:
      return f"{rel} is {got['size']} bytes, {want['size']} when saved"
    if got["crc32c"] != want["crc32c"]:
      return f"{rel} does not match its checksum"
  return None


# ------------------------------------------------------------------------------------------ the manager
class _ReadOnlyIsAsked(logging.Filter):
  """orbax logs WARNINGs for every read-only manager ("Given directory is read only=...",
  "CheckpointManagerOptions.read_only=True, setting save_interval_steps=0."), which is what a reader
  (evaluate, export) asks for: not news to the user."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(("Given directory is read only", "CheckpointManagerOptions.read_only=True"))


_READ_ONLY_NOTICE = _ReadOnlyIsAsked()


def manager(workdir: str, *, keep: int = 2, async_save: bool = True, read_only: bool = False
            ) -> ocp.CheckpointManager:
  logging.getLogger("absl").addFilter(_READ_ONLY_NOTICE)  # once: a logger keeps one copy of a filter
  keep_policy = policies.AnyPreservationPolicy([
      policies.LatestN(n=keep),
      policies.BestN(get_metric_fn=lambda m: m[VAL_LOSS], reverse=True, n=1,
                     keep_checkpoints_without_metrics=False),
  ])
  options = ocp.CheckpointManagerOptions(
      preservation_policy=keep_policy, enable_async_checkpointing=async_save, read_only=read_only,
      create=not read_only)
  handlers = {"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()}
  return ocp.CheckpointManager(checkpoint_dir(workdir), item_handlers=handlers, options=options)


def _restore_step(mgr: ocp.CheckpointManager, step: int, abstract_state) -> tuple[dict, dict]:
  """(state placed per the shardings in `abstract_state`, data iterator state)."""
  out = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                  data=ocp.args.JsonRestore()))
  return out["state"], out["data"]


def saved_state(mgr: ocp.CheckpointManager, step: int, device) -> dict:
  """The restore target of a step's state as it was saved (shapes, dtypes), every leaf on `device`: for
  readers that have neither the run's optimizer nor its mesh."""
  metadata = mgr.item_metadata(step)["state"]
  tree = getattr(metadata, "tree", metadata)  # recent orbax wraps the tree in a TreeMetadata
  place = jax.sharding.SingleDeviceSharding(device)
  return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=place), tree)


def _first_line(error: BaseException) -> str:
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0][:300] if text else ''}"


def _all_agree(ok: bool) -> bool:
  """True when every host's `ok` is True (one small all-gather on multi-host runs)."""
  if jax.process_count() == 1:
    return ok
  return bool(np.min(multihost_utils.process_allgather(np.int32(ok))))


def _from_chief(problem: str | None) -> str | None:
  """Process 0's verdict, on every host (the files are the same for all; one host reads them)."""
  if jax.process_count() == 1:
    return problem
  failed = bool(multihost_utils.broadcast_one_to_all(np.int32(problem is not None)))
  return (problem or "it failed verification on process 0") if failed else None


class Checkpoints:
  """The checkpoints of one workdir: verified saves for the trainer, verified restores for everyone.

      ckpts = Checkpoints(workdir, keep=2, async_save=True)      # the trainer (read_only=False)
      found = ckpts.restore_latest(abstract_state)               # (step, state, data) or None
      ckpts.save(step, state, data_state); ckpts.poll()          # after every train step
      ckpts.latest_verified(); ckpts.close()
  """

  def __init__(self, workdir: str, *, keep: int = 2, async_save: bool = True, read_only: bool = False):
    self.workdir = workdir
    self.directory = checkpoint_dir(workdir)
    self._read_only = read_only
    self._mgr = manager(workdir, keep=keep, async_save=async_save, read_only=read_only)
    self._pending: list[int] = []  # saved, manifest not written yet
    self._sealer: threading.Thread | None = None
    self._seal_error: BaseException | None = None
    self._is_chief = jax.process_index() == 0

  # -- saving
  def save(self, step: int, state, data_state: dict, val_loss: float | None = None, force: bool = False) -> None:
    metrics = None if val_loss is None else {VAL_LOSS: float(val_loss)}
    if self._pending:  # seal the previous save first, so at most one step (the one in flight) lacks a manifest
      self._mgr.wait_until_finished()  # orbax's save would wait for it here anyway
      self.poll()
    self._join_sealer()
    if self._mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    data=ocp.args.JsonSave(data_state)),
                      metrics=metrics, force=force):
      self._pending.append(step)

  def poll(self) -> None:
    """Starts writing the manifests of finished saves (in a thread); cheap when there is nothing to do."""
    if not self._pending or self._mgr.is_saving_in_progress() or (self._sealer and self._sealer.is_alive()):
      return
    steps, self._pending = self._pending, []
    self._raise_seal_error()
    if self._is_chief:
      self._sealer = threading.Thread(target=self._seal, args=(steps,), name="checkpoint-manifests", daemon=True)
      self._sealer.start()

  def wait(self) -> None:
    """Blocks until every save finished and its manifest is written."""
    self._mgr.wait_until_finished()
    self.poll()
    self._join_sealer()

  def close(self) -> None:
    try:
      self.wait()
    finally:
      self._mgr.close()

  def _seal(self, steps: list[int]) -> None:
    try:
      for step in steps:
        directory = step_dir(self.workdir, step)
        fs, path = fsspec.core.url_to_fs(directory)
        if fs.isdir(path):  # the keep policy may have removed it already
          write_manifest(directory, step)
    except BaseException as e:  # noqa: BLE001 - re-raised in the main thread by the next poll/wait
      self._seal_error = e

  def _join_sealer(self) -> None:
    if self._sealer is not None:
      self._sealer.join()
      self._sealer = None
    self._raise_seal_error()

  def _raise_seal_error(self) -> None:
    if self._seal_error is not None:
      error, self._seal_error = self._seal_error, None
      raise error

  # -- reading
  def steps(self) -> list[int]:
    return sorted(self._mgr.all_steps())

  def _legacy(self, steps: list[int]) -> bool:
    """A workdir written before checksum manifests existed: none of its steps has one."""
    return bool(steps) and not any(_has_manifest(step_dir(self.workdir, s)) for s in steps)

  def _problem(self, step: int, legacy: bool) -> str | None:
    directory = step_dir(self.workdir, step)
    if legacy and not _has_manifest(directory):
      return None
    return verify(directory)

  def latest_verified(self) -> int | None:
    """The newest step whose files match its manifest (after every pending save is sealed)."""
    self.wait()
    steps = self.steps()
    for step in reversed(steps):
      if _has_manifest(step_dir(self.workdir, step)) and verify(step_dir(self.workdir, step)) is None:
        return step
    return None

  def restore_latest(self, abstract_state) -> tuple[int, dict, dict] | None:
    """(step, state, data state) of the newest good step; None for a fresh workdir.

    Damaged steps are set aside, each with one log line; CheckpointError when none is left.
    """
    return self._restore_first(self.steps()[::-1], abstract_state, set_aside=not self._read_only)

  def restore_for_reading(self, which: str, abstract_state=None) -> tuple[int, dict]:
    """(step, state) for evaluation and export: `latest`, `best` (lowest validation loss, else latest) or a
    step number; a damaged step is skipped (never moved: readers leave the workdir as it is). Without an
    `abstract_state` the state comes back as it was saved (shapes, dtypes) on the first CPU device."""
    steps = self.steps()
    if not steps:
      raise CheckpointError(f"{self.directory} holds no checkpoint yet")
    if which == "latest":
      order = steps[::-1]
    elif which == "best":
      scored = sorted((m[VAL_LOSS], s) for s in steps if (m := self._mgr.metrics(s)) and VAL_LOSS in m)
      order = [s for _, s in scored] + [s for s in steps[::-1] if s not in {s for _, s in scored}]
    elif str(which).isdigit() and int(which) in steps:
      order = [int(which)]
    else:
      raise ValueError(f"checkpoint {which!r} not found in {self.directory}; have steps {steps}, "
                       "or use 'latest' / 'best'")
    if abstract_state is None:
      cpu = jax.devices("cpu")[0]
      abstract_state = lambda s: saved_state(self._mgr, s, cpu)  # noqa: E731
    step, state, _ = self._restore_first(order, abstract_state, set_aside=False)
    return step, state

  def _restore_first(self, order: list[int], abstract_state, set_aside: bool):
    """`abstract_state`: the restore target, or a function of the step giving it."""
    legacy = self._legacy(self.steps())
    rejected = []
    for step in order:
      problem = _from_chief(self._problem(step, legacy) if self._is_chief else None)
      if problem is None:
        try:
          target = abstract_state(step) if callable(abstract_state) else abstract_state
          state, data_state = _restore_step(self._mgr, step, target)
        except Exception as e:  # noqa: BLE001 - any failure to read the step makes it unusable
          problem = f"orbax cannot restore it ({_first_line(e)})"
          state = data_state = None
        if not _all_agree(problem is None):
          problem = problem or "another host could not restore it"
      if problem is None:
        if legacy:
          log.warning("step %d in %s has no checksum manifest (written by an older version): restored unverified",
                      step, self.directory)
        return step, state, data_state
      rejected.append((step, problem))
      then = "; trying the previous one" if step != order[-1] else ""
      if set_aside:
        log.warning("checkpoint step %d set aside to %s: %s%s", step, self._set_aside(step), problem, then)
      else:
        log.warning("checkpoint step %d in %s is not usable: %s%s", step, self.directory, problem, then)
    if not rejected:
      return None
    listing = "; ".join(f"step {s}: {p}" for s, p in rejected)
    moved = f" (moved to {os.path.join(self.workdir, SET_ASIDE_DIR)})" if set_aside else ""
    raise CheckpointError(f"no usable checkpoint in {self.directory}: {listing}{moved}. Restore good copies, or "
                          "delete the checkpoints folder to start over")

  def _set_aside(self, step: int) -> str:
    """Renames a damaged step out of orbax's sight (process 0; every host then re-lists the steps)."""
    source = step_dir(self.workdir, step)
    target = os.path.join(self.workdir, SET_ASIDE_DIR, str(step))
    if self._is_chief:
      fs, src = fsspec.core.url_to_fs(source)
      _, dst = fsspec.core.url_to_fs(target)
      n = 1
      while fs.exists(dst):
        n += 1
        _, dst = fsspec.core.url_to_fs(f"{target}-{n}")
      target = target if n == 1 else f"{target}-{n}"
      if "://" in source:  # object stores: copy then delete (no rename)
        if fs.exists(src):
          fs.copy(src, dst, recursive=True)
          fs.rm(src, recursive=True)
      else:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if os.path.isdir(src):
          os.rename(src, dst)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"checkpoint {step} set aside")
    self._mgr.reload()
    return target


def abstract_like(tree):
  """ShapeDtypeStructs (with shardings) of a tree of arrays: the restore target."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
                      tree)
