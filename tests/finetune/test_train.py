"""The trainer end to end on the tiny config (random init, synthetic colour captions, CPU):
it learns, it resumes bit-identically after SIGKILL, SIGTERM checkpoints before exit (and exits 143 at
once during start-up), 1 device and 8 devices agree, NaN stops cleanly, a damaged latest checkpoint is set
aside and the run resumes bit-identically from the previous one. Each run is a real
`python -m components.finetune` subprocess."""
import json
import os
import pathlib
import random
import signal
import subprocess
import sys

import numpy as np
import pytest

from _finetune_helpers import REPO, TINY_CONFIG, run_cli

STEPS = ["--config.total_steps=16", "--config.checkpoint_every=4", "--config.eval_every=8",
         "--config.log_every=1"]


def _losses(workdir) -> dict:
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  return {r["step"]: r["loss"] for r in rows if "loss" in r}


def _params(workdir, which="latest"):
  from components.common import policy
  from components.finetune import load_trained_params
  params, _ = load_trained_params(str(workdir), which)
  return policy.flatten(params)


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
  """A shared XLA compilation cache: later subprocesses skip most of the compile."""
  return {"JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("xla_cache")),
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, dataset_dir, tokenizer_path, cache_env):
  workdir = tmp_path_factory.mktemp("reference")
  proc = run_cli(workdir, dataset_dir, tokenizer_path, *STEPS, env_extra=cache_env)
  return workdir, proc.stdout


@pytest.mark.slow
def test_tiny_model_learns_and_writes_its_workdir(reference):
  workdir, stdout = reference
  losses = _losses(workdir)
  assert sorted(losses) == list(range(1, 17))
  assert losses[16] < 0.5 * losses[1], losses
  assert "examples/s" in stdout and "tokens/s" in stdout and "ETA" in stdout and "MFU" in stdout
  names = set(os.listdir(workdir))
  assert {"config.json", "model.json", "tokenizer.model", "metrics.jsonl", "checkpoints"} <= names
  assert any(n.startswith("events.out.tfevents") for n in names)
  assert json.load(open(workdir / "model.json"))["llm"]["final_logits_softcap"] == 0.0
  steps = sorted(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit())
  assert steps[-1] == 16 and len(steps) <= 3  # the last 2, plus the best by validation loss
  val = [json.loads(line) for line in open(workdir / "metrics.jsonl") if "val_loss" in line]
  assert [r["step"] for r in val] == [8, 16]


@pytest.mark.slow
def test_sigkill_then_rerun_gives_bit_identical_params(reference, tmp_path, dataset_dir, tokenizer_path, cache_env):
  workdir = tmp_path / "killed"
  kill_at = random.Random().randint(5, 14)
  cmd = [sys.executable, "-m", "components.finetune", "--config", TINY_CONFIG, "--workdir", str(workdir),
         f"--config.data_dir={dataset_dir}", f"--config.tokenizer={tokenizer_path}", *STEPS]
  proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **cache_env}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  for line in proc.stdout:
    if f"step {kill_at}/16 " in line:
      proc.send_signal(signal.SIGKILL)
      break
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, f"run ended before step {kill_at}"
  run_cli(workdir, dataset_dir, tokenizer_path, *STEPS, env_extra=cache_env)
  want, got = _params(reference[0]), _params(workdir)
  assert want.keys() == got.keys()
  for name in want:
    np.testing.assert_array_equal(got[name], want[name], err_msg=f"{name} (killed at step {kill_at})")
  assert _losses(workdir) == _losses(reference[0])


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_before_exit(tmp_path, dataset_dir, tokenizer_path, cache_env):
  workdir = tmp_path / "preempted"
  cmd = [sys.executable, "-m", "components.finetune", "--config", TINY_CONFIG, "--workdir", str(workdir),
         f"--config.data_dir={dataset_dir}", f"--config.tokenizer={tokenizer_path}",
         *[s for s in STEPS if not s.startswith("--config.checkpoint_every=")],
         "--config.checkpoint_every=100"]  # only SIGTERM (and the eval at step 8) can write one
  proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **cache_env}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  out = []
  for line in proc.stdout:
    out.append(line)
    if "step 3/16 " in line:
      proc.send_signal(signal.SIGTERM)
  proc.wait()
  assert proc.returncode == 143, "".join(out[-30:])
  steps = sorted(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit())
  assert len(steps) == 1 and 3 <= steps[0] < 8, steps
  assert any("SIGTERM" in line for line in out)


@pytest.mark.slow
def test_one_device_and_eight_devices_give_the_same_losses(reference, tmp_path, dataset_dir, tokenizer_path,
                                                           cache_env):
  workdir = tmp_path / "one_device"
  run_cli(workdir, dataset_dir, tokenizer_path, *STEPS,
          env_extra={**cache_env, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"})
  one, eight = _losses(workdir), _losses(reference[0])
  assert one.keys() == eight.keys()
  # The two runs legitimately differ in reduction order: eight devices hold one row each and all-reduce the
  # FSDP-sharded gradients, one device sums all 8 rows itself, and XLA:CPU picks kernels by shape. In f32
  # (tiny_test.py computes in f32) that is a few ulps per reduction (ulp of a loss of 8 is 9.5e-7), carried
  # through 16 optimizer steps. Measured: 4.8e-7 at most. The bound (1e-5 + 1e-5 * loss, about 10 to 90 ulps)
  # leaves room for that and still fails on any real difference (one wrong row or a lost gradient shard
  # moves the loss by more than 1e-2).
  np.testing.assert_allclose([one[s] for s in sorted(one)], [eight[s] for s in sorted(eight)], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_nan_loss_stops_with_a_clear_message_and_keeps_good_checkpoints(tmp_path, dataset_dir, tokenizer_path,
                                                                        cache_env):
  workdir = tmp_path / "nan"
  proc = run_cli(workdir, dataset_dir, tokenizer_path, "--config.total_steps=8", "--config.checkpoint_every=1",
                 "--config.eval_every=0", "--config.log_every=1", "--config.optimizer.lr=1e30",
                 "--config.optimizer.grad_clip_norm=0", "--config.optimizer.name=sgd", env_extra=cache_env,
                 check=False)
  assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
  message = next(line for line in proc.stdout.splitlines() if "training stopped" in line)
  bad_step = int(message.split(" at step ")[1].split(";")[0])
  assert "last good checkpoint is step" in message
  steps = sorted(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit())
  assert steps and max(steps) < bad_step
  from components.finetune import load_trained_params
  params, _ = load_trained_params(str(workdir))
  from components.common import policy
  assert all(np.isfinite(v).all() for v in policy.flatten(params).values())


# ---------------------------------------------------------------------------------- damaged checkpoints
def _files(step_dir):
  return sorted((os.path.join(d, n) for d, _, names in os.walk(step_dir) for n in names if n != "checksums.json"),
                key=lambda p: (-os.path.getsize(p), p))


def _truncate(step_dir):
  path = _files(os.path.join(step_dir, "state"))[0]
  os.truncate(path, os.path.getsize(path) // 2)


def _flip_bytes(step_dir):
  path = _files(os.path.join(step_dir, "state"))[0]  # the largest: array bytes
  data = bytearray(open(path, "rb").read())
  start = max(0, len(data) // 2 - 2048)
  for i in range(start, min(len(data), start + 4096)):
    data[i] ^= 0xFF
  with open(path, "r+b") as f:
    f.write(data)


def _empty_metadata(step_dir):
  open(os.path.join(step_dir, "state", "_METADATA"), "w").close()


def _remove_state_dir(step_dir):
  import shutil
  shutil.rmtree(os.path.join(step_dir, "state"))


DAMAGE = {"truncated file": _truncate, "flipped bytes": _flip_bytes, "emptied metadata": _empty_metadata,
          "missing directory": _remove_state_dir}


def _steps(workdir):
  return sorted(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit())


def _copy(reference_dir, tmp_path, name):
  import shutil
  return pathlib.Path(shutil.copytree(reference_dir, tmp_path / name, symlinks=True))


@pytest.mark.slow
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_latest_checkpoint_falls_back_and_finishes_bit_identical(damage, reference, tmp_path, dataset_dir,
                                                                         tokenizer_path, cache_env):
  workdir = _copy(reference[0], tmp_path, "damaged")
  latest, previous = _steps(workdir)[-2:][::-1]
  DAMAGE[damage](workdir / "checkpoints" / str(latest))
  proc = run_cli(workdir, dataset_dir, tokenizer_path, *STEPS, env_extra=cache_env)
  said = [line for line in proc.stdout.splitlines() if f"checkpoint step {latest} set aside" in line]
  assert len(said) == 1, proc.stdout[-3000:]
  assert f"resumed from step {previous} " in proc.stdout
  assert "Traceback" not in proc.stdout + proc.stderr
  assert os.path.isdir(workdir / "checkpoints_set_aside" / str(latest))  # renamed, not deleted
  want, got = _params(reference[0]), _params(workdir)
  for name in want:
    np.testing.assert_array_equal(got[name], want[name], err_msg=f"{name} ({damage})")
  assert _losses(workdir) == _losses(reference[0])


@pytest.mark.slow
def test_every_checkpoint_damaged_is_one_clear_error(reference, tmp_path, dataset_dir, tokenizer_path, cache_env):
  workdir = _copy(reference[0], tmp_path, "all_damaged")
  steps = _steps(workdir)
  for step in steps:
    _flip_bytes(workdir / "checkpoints" / str(step))
  proc = run_cli(workdir, dataset_dir, tokenizer_path, *STEPS, env_extra=cache_env, check=False)
  assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert "Traceback" not in proc.stdout + proc.stderr
  error = [line for line in proc.stdout.splitlines() if "ERROR" in line]
  assert len(error) == 1 and "no usable checkpoint in" in error[0], error
  assert all(f"step {s}: " in error[0] for s in steps) and "does not match its checksum" in error[0]
  assert _steps(workdir) == [] and sorted(os.listdir(workdir / "checkpoints_set_aside")) == sorted(map(str, steps))


@pytest.mark.slow
def test_reading_a_workdir_skips_a_damaged_checkpoint(reference, tmp_path, caplog):
  from components.common import policy
  from components.finetune import CheckpointError, load_trained_params
  workdir = _copy(reference[0], tmp_path, "read")
  latest, previous = _steps(workdir)[-2:][::-1]
  _flip_bytes(workdir / "checkpoints" / str(latest))
  with caplog.at_level("WARNING", logger="components.finetune"):
    got = policy.flatten(load_trained_params(str(workdir))[0])
  want = _params(reference[0], str(previous))
  assert all(np.array_equal(got[k], want[k]) for k in want)
  assert any(f"checkpoint step {latest}" in r.message and "checksum" in r.message for r in caplog.records)
  assert str(latest) in os.listdir(workdir / "checkpoints")  # a reader moves nothing
  with pytest.raises(CheckpointError, match=f"step {latest}: .*does not match its checksum"):
    load_trained_params(str(workdir), str(latest))


@pytest.mark.slow
def test_sigterm_during_start_up_exits_143_with_one_line(tmp_path, dataset_dir, tokenizer_path, cache_env):
  workdir = tmp_path / "start_up"
  cmd = [sys.executable, "-m", "components.finetune", "--config", TINY_CONFIG, "--workdir", str(workdir),
         f"--config.data_dir={dataset_dir}", f"--config.tokenizer={tokenizer_path}", *STEPS]
  proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **cache_env}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  out = []
  for line in proc.stdout:
    out.append(line)
    if " devices (" in line:  # the trainer's first line: model, compilation and restore are still ahead
      proc.send_signal(signal.SIGTERM)
  proc.wait()
  text = "".join(out)
  assert proc.returncode == 143, text[-3000:]
  assert sum("SIGTERM during start-up" in line for line in out) == 1 and "Traceback" not in text


_SIGTERM_IN_GC_CALLBACK = """
import gc, os, signal, time
from components.finetune import preemption
preemption.exit_on_sigterm()
gc.callbacks.append(lambda phase, info: phase == "start" and os.kill(os.getpid(), signal.SIGTERM))
gc.collect()
time.sleep(1)
print("start-up went on")
"""


def test_sigterm_in_a_gc_callback_still_stops_start_up():
  """A handler's exception would be swallowed there ("Exception ignored in ..."), as it once was in jax's
  gc callback: the start-up stop must not depend on the exception reaching the main code."""
  proc = subprocess.run([sys.executable, "-c", _SIGTERM_IN_GC_CALLBACK], cwd=REPO, capture_output=True, text=True,
                        timeout=60)
  assert proc.returncode == 143, proc.stdout + proc.stderr
  assert "start-up went on" not in proc.stdout and "SIGTERM during start-up" in proc.stderr + proc.stdout


_FAILING_WRITE = """
import errno, sys
from components.finetune import workdir
def full(path, data):
  raise OSError(errno.ENOSPC, "No space left on device")
workdir.write_bytes = full
from components.finetune.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def test_disk_full_is_one_line_naming_the_workdir(tmp_path, dataset_dir, tokenizer_path):
  workdir = tmp_path / "full"
  proc = subprocess.run([sys.executable, "-c", _FAILING_WRITE, "--config", TINY_CONFIG, "--workdir", str(workdir),
                         f"--config.data_dir={dataset_dir}", f"--config.tokenizer={tokenizer_path}", *STEPS],
                        cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
  assert "Traceback" not in proc.stdout + proc.stderr
  errors = [line for line in proc.stdout.splitlines() if " ERROR " in line]
  assert len(errors) == 1 and errors[0].endswith(
      f"no space left on the device at {workdir}: free some space or use another location"), errors
