"""The trainer end to end on the tiny config (random init, synthetic colour captions, CPU):
it learns, it resumes bit-identically after SIGKILL, SIGTERM checkpoints before exit, 1 device and 8
devices agree, NaN stops cleanly. Each run is a real `python -m components.finetune` subprocess."""
import json
import os
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
         f"--config.data_dir={dataset_dir}", f"--config.tokenizer={tokenizer_path}", *STEPS,
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
