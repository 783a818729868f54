"""remat_policy="auto": candidates compiled ahead of time, fastest first; the first that fits the memory limit
wins; below the most frugal one the batch is split into micro-batches; the decision is logged and written
to WORKDIR/remat.json."""
import json
import logging

import pytest

from components.common import sharding
from components.finetune import autotune, config as config_lib, state as state_lib
from _finetune_helpers import TINY_CONFIG


class _FakeCompiled:
  """What `compile_step` returns: only memory_analysis is read."""

  def __init__(self, peak):
    self._peak = peak

  def memory_analysis(self):
    class Mem:
      argument_size_in_bytes, output_size_in_bytes, alias_size_in_bytes = self._peak, 0, 0
      temp_size_in_bytes = generated_code_size_in_bytes = 0
    return Mem()


def _fake(peaks):
  """compile_step with a peak per (policy, micro-batches) (None: the compiler runs out of memory)."""
  calls = []

  def compile_step(policy, accum):
    calls.append((policy, accum))
    peak = peaks.get((policy, accum), peaks.get(policy))
    if peak is None:
      raise RuntimeError("RESOURCE_EXHAUSTED: exceeds available HBM")
    return _FakeCompiled(peak // accum)

  return compile_step, calls


PEAKS = {"none": 1000, "dots_with_no_batch_dims_saveable": 700, "nothing_saveable": 500}


@pytest.mark.parametrize("limit,expected_policy,expected_accum", [
    (2000, "none", 1),  # 1000 <= 0.9 * 2000
    (1000, "dots_with_no_batch_dims_saveable", 1),  # 700 <= 900 < 1000
    (600, "nothing_saveable", 1),
    (400, "nothing_saveable", 2),  # 500 / 2 = 250 <= 360
    (150, "nothing_saveable", 4),  # 125 <= 135
])
def test_fastest_candidate_that_fits_then_micro_batches(limit, expected_policy, expected_accum):
  compile_step, calls = _fake(PEAKS)
  decision = autotune.choose(compile_step, batch=32, batch_shards=2, remat_policy="auto", grad_accum_steps=1,
                             limit_bytes=limit)
  assert (decision.remat_policy, decision.grad_accum_steps) == (expected_policy, expected_accum)
  assert calls[-1] == (expected_policy, expected_accum)  # it stopped at the first that fits
  if expected_accum == 1:
    assert [c[0] for c in calls] == list(autotune.REMAT_CANDIDATES[:len(calls)])
  else:  # all three at the full batch, then only the most frugal with 2, 4, ... micro-batches
    assert calls[:3] == [(p, 1) for p in autotune.REMAT_CANDIDATES]
    assert all(c == ("nothing_saveable", a) for c, a in zip(calls[3:], (2, 4, 8)))
  record = decision.to_json()
  assert record["remat_policy"] == expected_policy and record["grad_accum_steps"] == expected_accum
  assert [c["policy"] for c in record["remat_candidates"]] == [c[0] for c in calls]
  assert [c["fits"] for c in record["remat_candidates"]] == [False] * (len(calls) - 1) + [True]
  assert all({"policy", "peak_bytes_per_device", "fits"} <= c.keys() for c in record["remat_candidates"])


def test_out_of_memory_compiles_are_answers_and_nothing_fitting_fails_clearly():
  compile_step, calls = _fake({"none": None, "dots_with_no_batch_dims_saveable": None, "nothing_saveable": 800})
  with pytest.raises(autotune.DoesNotFit, match="no train step fits .* micro-batch") as err:
    autotune.choose(compile_step, batch=8, batch_shards=2, remat_policy="auto", grad_accum_steps=1, limit_bytes=100)
  # micro-batches stop where a micro-batch no longer splits over the 2 batch shards: 8 = 2 x 4 x 1
  assert calls == [(p, 1) for p in autotune.REMAT_CANDIDATES] + [("nothing_saveable", 2), ("nothing_saveable", 4)]
  assert err.value.candidates[0].peak_bytes_per_device is None and not err.value.candidates[0].fits


def test_other_compile_errors_are_not_swallowed():
  def compile_step(policy, accum):
    raise TypeError("a bug")
  with pytest.raises(TypeError, match="a bug"):
    autotune.choose(compile_step, batch=8, batch_shards=1, remat_policy="auto", grad_accum_steps=1, limit_bytes=100)


def test_a_fixed_policy_is_compiled_once_and_reported():
  compile_step, calls = _fake(PEAKS)
  decision = autotune.choose(compile_step, batch=8, batch_shards=1, remat_policy="nothing_saveable",
                             grad_accum_steps=2, limit_bytes=100)
  assert calls == [("nothing_saveable", 2)] and not decision.fits and decision.remat_policy == "nothing_saveable"


def test_memory_limit_from_config_device_or_host():
  import jax
  assert autotune.memory_limit(jax.devices(), 1.5) == int(1.5 * 2**30)
  host = autotune.memory_limit(jax.devices())  # CPU: the host's memory shared by the forced CPU devices
  assert 0 < host * len(jax.devices()) <= 2**50


def _tiny(overrides=()):
  return config_lib.load_config(TINY_CONFIG, ["batch_size=16", "text_len=32", "remat_policy=auto", *overrides])


@pytest.mark.slow
def test_auto_on_the_tiny_model_shrinks_with_the_limit_and_says_so(caplog):
  """Real compiles on CPU (one device): the peaks of the three policies, then limits between them."""
  import jax
  config = _tiny()
  mesh = sharding.make_mesh(1, 1, devices=jax.devices()[:1])
  setup = state_lib.build(config, mesh, total_steps=10)
  peaks = {}
  for policy in autotune.REMAT_CANDIDATES:
    fixed = config_lib.load_config(TINY_CONFIG, ["batch_size=16", "text_len=32", f"remat_policy={policy}"])
    peaks[policy] = state_lib.tune_train_step(setup, fixed, None).candidates[0].peak_bytes_per_device
  assert peaks["none"] > peaks["dots_with_no_batch_dims_saveable"] > peaks["nothing_saveable"], peaks
  between = (peaks["dots_with_no_batch_dims_saveable"] + peaks["none"]) / 2 / (1 - autotune.MARGIN)
  with caplog.at_level(logging.INFO, logger="components.finetune"):
    cheaper = state_lib.tune_train_step(setup, config, int(between))
  assert cheaper.remat_policy == "dots_with_no_batch_dims_saveable" and cheaper.grad_accum_steps == 1
  assert "remat auto: chose dots_with_no_batch_dims_saveable" in caplog.text
  below = int(peaks["nothing_saveable"] * 0.97 / (1 - autotune.MARGIN))
  split = state_lib.tune_train_step(setup, config, below)
  assert split.remat_policy == "nothing_saveable" and split.grad_accum_steps >= 2, split.to_json()
  assert split.candidates[-1].fits and split.candidates[-1].peak_bytes_per_device < peaks["nothing_saveable"]


@pytest.mark.slow
def test_trainer_writes_remat_json(tmp_path, dataset_dir, tokenizer_path):
  from components.finetune import train
  config = config_lib.load_config(TINY_CONFIG, [
      f"data_dir={dataset_dir}", f"tokenizer={tokenizer_path}", "total_steps=2", "eval_every=0", "valid_split=",
      "checkpoint_every=2", "remat_policy=auto", "memory_limit_gib=8"])
  train(config, str(tmp_path))
  record = json.loads((tmp_path / "remat.json").read_text())
  assert record["remat_policy"] == "none" and record["grad_accum_steps"] == 1
  assert record["memory_limit_bytes"] == 8 * 2**30 and record["remat_candidates"][0]["fits"] is True
