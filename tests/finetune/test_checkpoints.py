"""Checkpoints that prove themselves (components/common/train_checkpoints.py), on a small state in process:
the manifest is written only once orbax finished the asynchronous save; each kind of damage is named;
restore falls back to the previous good step and sets the damaged one aside; a workdir from before
manifests restores unverified; none left is one error listing what was found."""
import logging
import os
import re
import shutil
import time

import jax.numpy as jnp
import numpy as np
import pytest

from components.common import train_checkpoints as checkpoints

STATE = {"w": jnp.arange(4096, dtype=jnp.float32), "step": jnp.int32(0)}


def _state(step):
  return {"w": STATE["w"] + step, "step": jnp.int32(step)}


def _save_steps(workdir, steps, keep=3, seal=True):
  ckpts = checkpoints.Checkpoints(str(workdir), keep=keep, async_save=True)
  for step in steps:
    ckpts.save(step, _state(step), {"position": step})
    for _ in range(50):  # the train loop polls after every step
      ckpts.poll()
      time.sleep(0.01)
  if seal:
    ckpts.close()
  return ckpts


def test_manifest_is_written_only_after_the_save_completed(tmp_path, monkeypatch):
  seen = []
  write = checkpoints.write_manifest

  def recording(directory, step):
    seen.append((step, ckpts._mgr.is_saving_in_progress(), sorted(os.listdir(directory))))
    write(directory, step)

  monkeypatch.setattr(checkpoints, "write_manifest", recording)
  ckpts = checkpoints.Checkpoints(str(tmp_path), keep=3, async_save=True)
  for step in (1, 2, 3):
    ckpts.save(step, _state(step), {"position": step})
    ckpts.poll()  # right after an asynchronous save: still in progress, nothing is sealed yet
    assert step not in [s for s, _, _ in seen]
  ckpts.close()
  assert [s for s, _, _ in seen] == [1, 2, 3]
  for step, in_progress, files in seen:
    # Orbax writes _CHECKPOINT_METADATA when it finalizes a save (newer releases also commit_success.txt).
    assert not in_progress and "_CHECKPOINT_METADATA" in files and "checksums.json" not in files, (step, files)
  assert all(checkpoints.verify(checkpoints.step_dir(str(tmp_path), s)) is None for s in (1, 2, 3))


def _largest(directory):
  files = [os.path.join(d, n) for d, _, names in os.walk(directory) for n in names if n != "checksums.json"]
  return max(files, key=os.path.getsize)


def _truncate(d):
  path = _largest(os.path.join(d, "state"))
  os.truncate(path, os.path.getsize(path) // 2)


def _flip(d):
  path = _largest(os.path.join(d, "state"))
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0xFF
  open(path, "wb").write(data)


DAMAGE = {
    "truncated file": (_truncate, r"is \d+ bytes, \d+ when saved"),
    "flipped bytes": (_flip, "does not match its checksum"),
    "emptied metadata": (lambda d: open(os.path.join(d, "data", "metadata"), "w").close(), "data/metadata is 0 bytes"),
    "missing directory": (lambda d: shutil.rmtree(os.path.join(d, "state")), "state/.* is missing"),
    "no manifest": (lambda d: os.remove(os.path.join(d, "checksums.json")), "has no checksums.json"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_latest_step_is_set_aside_and_the_previous_one_restored(damage, tmp_path, caplog):
  _save_steps(tmp_path, (1, 2, 3))
  spoil, reason = DAMAGE[damage]
  spoil(checkpoints.step_dir(str(tmp_path), 3))
  assert checkpoints.verify(checkpoints.step_dir(str(tmp_path), 3)) is not None
  ckpts = checkpoints.Checkpoints(str(tmp_path), keep=3)
  with caplog.at_level(logging.WARNING, logger="components.finetune"):
    step, state, data = ckpts.restore_latest(checkpoints.abstract_like(STATE))
  ckpts.close()
  assert step == 2 and data == {"position": 2} and np.array_equal(state["w"], _state(2)["w"])
  lines = [r.getMessage() for r in caplog.records]
  assert len(lines) == 1 and "checkpoint step 3 set aside to" in lines[0], lines
  assert re.search(reason, lines[0]), lines[0]
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]
  assert os.listdir(tmp_path / checkpoints.SET_ASIDE_DIR) == ["3"]  # renamed, not deleted


def test_every_step_damaged_is_one_error_listing_them(tmp_path):
  _save_steps(tmp_path, (1, 2))
  for step in (1, 2):
    _flip(checkpoints.step_dir(str(tmp_path), step))
  ckpts = checkpoints.Checkpoints(str(tmp_path), keep=3)
  with pytest.raises(checkpoints.CheckpointError, match=r"no usable checkpoint in .*step 2: .*checksum; step 1: "):
    ckpts.restore_latest(checkpoints.abstract_like(STATE))
  assert checkpoints.Checkpoints(str(tmp_path), keep=3).latest_verified() is None


def test_a_workdir_from_before_manifests_restores_unverified(tmp_path, caplog):
  _save_steps(tmp_path, (1, 2))
  for step in (1, 2):
    os.remove(os.path.join(checkpoints.step_dir(str(tmp_path), step), "checksums.json"))
  ckpts = checkpoints.Checkpoints(str(tmp_path), keep=3)
  with caplog.at_level(logging.WARNING, logger="components.finetune"):
    step, _, _ = ckpts.restore_latest(checkpoints.abstract_like(STATE))
  assert step == 2 and any("restored unverified" in r.getMessage() for r in caplog.records)
  assert ckpts.latest_verified() is None  # so a TrainingDiverged message would name none


def test_readers_skip_a_damaged_step_without_moving_it(tmp_path):
  _save_steps(tmp_path, (1, 2))
  _flip(checkpoints.step_dir(str(tmp_path), 2))
  reader = checkpoints.Checkpoints(str(tmp_path), read_only=True)
  step, state = reader.restore_for_reading("latest", checkpoints.abstract_like(STATE))
  assert step == 1 and int(state["step"]) == 1
  with pytest.raises(checkpoints.CheckpointError, match="step 2: .*does not match its checksum"):
    reader.restore_for_reading("2", checkpoints.abstract_like(STATE))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]


def test_back_to_back_saves_leave_only_the_step_in_flight_unsealed(tmp_path):
  ckpts = checkpoints.Checkpoints(str(tmp_path), keep=2, async_save=True)
  for step in (1, 2, 3, 4):
    ckpts.save(step, _state(step), {"position": step})  # a save every step, no poll in between
  # As a kill now would find it: step 4 may still be in flight, step 3 is verified (keep=2 holds 3 and 4).
  assert checkpoints.verify(checkpoints.step_dir(str(tmp_path), 3)) is None
  ckpts.close()
  assert checkpoints.verify(checkpoints.step_dir(str(tmp_path), 4)) is None


def test_a_relative_workdir_saves_and_restores(tmp_path, monkeypatch):
  # `--workdir runs/a`: orbax rejects relative paths; the checkpoints land under the absolute one.
  monkeypatch.chdir(tmp_path)
  _save_steps("runs/a", (1,))
  assert os.path.isdir(tmp_path / "runs" / "a" / "checkpoints" / "1")
  step, state, data = checkpoints.Checkpoints("runs/a", keep=3).restore_latest(checkpoints.abstract_like(STATE))
  assert step == 1 and data == {"position": 1} and np.array_equal(state["w"], _state(1)["w"])
