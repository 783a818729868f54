"""The fit planner compiles the real train step for a TPU topology on this CPU machine (needs the tpu
extra: libtpu) and ends with one JSON line."""
import json
import os
import subprocess
import sys

import pytest

from _finetune_helpers import REPO


def _plan(*args, timeout=1500) -> tuple[dict, str]:
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "TPU_ACCELERATOR_TYPE": "v5litepod-4",
         "TPU_WORKER_HOSTNAMES": "localhost"}
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run([sys.executable, "-m", "components.finetune.plan", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  lines = [line for line in proc.stdout.splitlines() if line.strip()]
  return json.loads(lines[-1]), proc.stdout


def _need_libtpu():
  try:
    import libtpu  # noqa: F401
  except ImportError:
    pytest.skip("libtpu not installed: pip install 'paligemma-pipelines[tpu]' to compile for TPU topologies")


@pytest.mark.slow
def test_planner_on_a_tiny_model_reports_memory_flops_and_largest_batch():
  _need_libtpu()
  # --no-search: a tiny model's largest batch is in the millions, dozens of TPU compiles away (the search
  # itself is tested below on a memory model).
  result, out = _plan("--model", "tiny-v2", "--trainable", "full", "--batch", "8", "--text-len", "16",
                      "--topology", "v5e:2x2", "--no-search")
  assert result["fits"] is True and result["devices"] == 4
  assert 0 < result["peak_bytes_per_device"] <= result["hbm_bytes_per_device"] == int(15.75 * 2**30)
  assert result["flops_per_step"] > 0
  # remat auto, as the trainer: the fastest candidate fits this tiny model, so it is the only one compiled.
  assert (result["remat_policy"], result["grad_accum_steps"]) == ("none", 1)
  assert [(c["policy"], c["fits"]) for c in result["remat_candidates"]] == [("none", True)]
  assert "chosen: remat_policy=none, grad_accum_steps=1" in out


@pytest.mark.slow
@pytest.mark.parametrize("trainable,optimizer,batch,topology", [
    ("full", "adamw", 32, "v5e:2x4"),  # big_vision's full fine-tune on a v5e-8
    ("attention", "sgd", 8, "v5e:1x1"),  # the 16 GB notebook recipe on one v5e chip (15.75 GiB)
])
def test_planner_paligemma2_3b(trainable, optimizer, batch, topology):
  _need_libtpu()
  result, out = _plan("--model", "paligemma2-3b-pt-224", "--trainable", trainable, "--optimizer", optimizer,
                      "--batch", str(batch), "--text-len", "128", "--topology", topology, "--no-search")
  print(f"PaliGemma 2 3B-224, {trainable}, batch {batch}, text 128 on {topology}: "
        f"{'fits' if result['fits'] else 'does NOT fit'} "
        f"(peak {result['peak_bytes_per_device'] and result['peak_bytes_per_device'] / 2**30:.2f} GiB of "
        f"{result['hbm_bytes_per_device'] / 2**30:.2f} GiB)")
  assert {"peak_bytes_per_device", "hbm_bytes_per_device", "fits", "flops_per_step"} <= result.keys()
  # The trainer's remat choice for this topology: candidates fastest first, the last one tried is the choice.
  from components.finetune.autotune import REMAT_CANDIDATES
  print(f"  chosen remat_policy={result['remat_policy']}, grad_accum_steps={result['grad_accum_steps']}; tried "
        + ", ".join(f"{c['policy']} x{c['grad_accum_steps']} "
                    f"{'fits' if c['fits'] else 'does not fit'}" for c in result["remat_candidates"]))
  candidates = result["remat_candidates"]
  assert result["fits"] and result["remat_policy"] in REMAT_CANDIDATES and result["grad_accum_steps"] >= 1
  assert [c["fits"] for c in candidates] == [False] * (len(candidates) - 1) + [True]
  assert candidates[-1]["policy"] == result["remat_policy"]
  assert candidates[-1]["peak_bytes_per_device"] == result["peak_bytes_per_device"] <= result["hbm_bytes_per_device"]
  assert f"chosen: remat_policy={result['remat_policy']}" in out
  # Model FLOPs (the MFU convention, whatever is trained): 6 per weight per token for every matmul a token
  # goes through. The token embedding (257152 x 2304) is a lookup, used as a matmul only for the logits of
  # the 128 text tokens, so the floor is 6 * (3,032,094,960 - 592,478,208) * 384 tokens per example; a scan
  # body counted once would be 26x lower, and anything above 8 * N * tokens would count weights twice.
  non_embedding_params, all_params, tokens = 3_032_094_960 - 257_152 * 2304, 3_032_094_960, 256 + 128
  assert 6 * non_embedding_params * tokens * batch < result["flops_per_step"] < 8 * all_params * tokens * batch


def test_largest_batch_search_on_a_memory_model(monkeypatch):
  """The search (a linear estimate from two compiles, then confirmed downwards) on a step whose peak grows
  faster than linearly: it returns the largest multiple of the device count that fits, and never one that
  does not."""
  from components.finetune import plan

  hbm, tried = 10_000, []

  def peak(batch):
    return 1_000 + 20 * batch + batch * batch // 50

  def fake_try(config, devices, batch, limit):
    tried.append(batch)
    fits = peak(batch) <= limit
    return fits, ({"peak_bytes_per_device": peak(batch)} if fits else None)

  monkeypatch.setattr(plan, "_try", fake_try)
  best = plan.largest_batch(None, None, hbm, 8, {"peak_bytes_per_device": peak(8)}, 4)
  assert best % 4 == 0 and peak(best) <= hbm
  assert best >= 0.9 * max(b for b in range(0, 1000, 4) if peak(b) <= hbm)  # within the 0.9 steps of the optimum
  assert plan.largest_batch(None, None, hbm, 1000, None, 4) > 0  # an asked batch that does not fit: halved
