"""Fit planner: will this fine-tuning run fit on that hardware? Answered on a CPU, before renting it.

  python -m components.finetune.plan --model paligemma2-3b-pt-224 --trainable full --batch 32 \
      --text-len 128 --topology v5e:2x4

It compiles the trainer's real train step (same state, shardings, optimizer, attention, donation) ahead
of time for the target topology (jax.experimental.topologies; needs the `tpu` extra), with abstract
parameters from `jax.eval_shape`, so nothing is allocated, and makes the trainer's choice of remat policy
and micro-batches (`--remat auto`, the default; autotune.py: candidates fastest first, stopping at the
first that fits). It prints each candidate's peak, the choice, per-device memory (weights, optimizer
state, temporaries), analytic FLOPs per step, whether it fits (the compile succeeds and the bound
argument + output - alias + temp + code is within (1 - autotune.MARGIN) of HBM), and the largest batch
that fits with the chosen policy (linear in the batch between two compiles, then confirmed by compiling
it). The last line is one JSON object, with `remat_policy`, `grad_accum_steps` and `remat_candidates`.
A 3B step takes minutes to compile for TPU on a CPU: a candidate that does not fit usually fails within
seconds ("exceeds available HBM"), and the search stops at the first that fits.
See ../shared/reference/TPU_AOT.md for how the numbers relate to real runs.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

GiB = 2**30
# HBM per device that the TPU compiler enforces (TPU_AOT.md), by topology prefix.
HBM_BYTES = {"v4": 30.75 * GiB, "v5e": 15.75 * GiB, "v5p": 95.74 * GiB, "v5": 95.74 * GiB, "v6e": 31.25 * GiB}


def _devices(topology: str):
  """(devices, HBM bytes per device) for `cpu` or a TPU topology name like `v5e:2x4`."""
  import jax
  if topology == "cpu":
    return jax.devices("cpu"), os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  m = re.fullmatch(r"(v4|v5e|v5p|v5|v6e):(\d+(?:x\d+){1,2})", topology)
  if not m:
    raise ValueError(f"--topology {topology!r}: use cpu or a TPU name like v5e:2x2, v5e:2x4, v5p:2x2x1, "
                     "v4:2x2x1, v6e:2x2")
  from jax.experimental import topologies
  kwargs = {}
  if m[1] == "v4":
    kwargs["chip_config_name"] = "megacore"  # 1 device per chip, like a real v4 slice
  dims = [int(d) for d in m[2].split("x")]
  if m[1] in ("v5e", "v6e") and len(dims) == 2 and dims[0] * dims[1] <= 8:
    kwargs["chips_per_host_bounds"] = (dims[0], dims[1], 1)  # single-host slices (v5e-1 ... v5e-8)
  try:
    desc = topologies.get_topology_desc(topology_name=topology, platform="tpu", **kwargs)
  except Exception as e:  # libtpu missing or unknown name
    raise RuntimeError(f"cannot describe TPU topology {topology!r} ({e}); install the tpu extra: "
                       "pip install 'paligemma-pipelines[tpu]'") from e
  return desc.devices, HBM_BYTES[m[1]]


def _per_device_bytes(abstract_tree) -> int:
  import jax
  import numpy as np
  total = 0
  for leaf in jax.tree.leaves(abstract_tree):
    shape = leaf.sharding.shard_shape(leaf.shape)
    total += int(np.prod(shape, dtype=np.int64)) * leaf.dtype.itemsize
  return total


def make_config(args):
  from components.finetune import config as config_lib
  c = config_lib.defaults() if not args.config else config_lib.load_config(args.config)
  overrides = dict(model_name=args.model, trainable=args.trainable, batch_size=args.batch, text_len=args.text_len,
                   checkpoint="", frozen_dtype=args.frozen_dtype, remat_policy=args.remat,
                   grad_accum_steps=args.grad_accum)
  for key, value in overrides.items():
    if value is not None:
      setattr(c, key, value)
  if args.optimizer:
    c.optimizer.name = args.optimizer
  if args.lora_rank is not None:
    c.lora.rank = args.lora_rank
  c.mesh.data, c.mesh.fsdp = 1, -1
  return c


def _setup(config, devices, batch: int):
  from components.common import sharding
  from components.finetune import state as state_lib
  config.unlock()
  config.batch_size = batch
  config.lock()
  return state_lib.build(config, sharding.make_mesh(1, -1, devices=devices), total_steps=1000)


def _memory(setup, decision) -> dict:
  """The chosen step's figures per device (the planner's JSON fields)."""
  chosen = decision.candidates[-1]
  memory = chosen.memory or {}
  return {
      "weights_bytes_per_device": _per_device_bytes(setup.abstract_state["train"])
                                  + _per_device_bytes(setup.abstract_frozen),
      "optimizer_bytes_per_device": _per_device_bytes(setup.abstract_state["opt"]),
      "temp_bytes_per_device": memory.get("temp_bytes"),
      "code_bytes_per_device": memory.get("code_bytes"),
      "peak_bytes_per_device": chosen.peak_bytes_per_device,
  }


def plan_step(config, devices, batch: int, hbm: int):
  """The trainer's choice for `batch` on `devices` (autotune.py: remat "auto" tries candidates fastest first
  and stops at the first that fits). Returns (decision or None when nothing fits, memory dict of the chosen
  step or None, the candidates tried)."""
  from components.finetune import autotune, state as state_lib
  setup = _setup(config, devices, batch)
  try:
    decision = state_lib.tune_train_step(setup, config, hbm)
  except autotune.DoesNotFit as e:
    return None, None, e.candidates
  return decision, _memory(setup, decision), decision.candidates


def _try(config, devices, batch, hbm):
  """(fits, memory or None) of the configured (fixed) remat policy and micro-batches at `batch`."""
  decision, mem, _ = plan_step(config, devices, batch, hbm)
  if decision is None or not decision.fits:
    return False, None
  return True, mem


def largest_batch(config, devices, hbm, batch: int, mem: dict | None, step: int) -> int:
  """Largest multiple of `step` that fits: a linear estimate from two compiles, then confirmed."""
  if mem is None:  # the asked batch does not fit: halve until one does
    b = batch
    while b > step:
      b = max(step, (b // 2) // step * step)
      ok, mem = _try(config, devices, b, hbm)
      if ok:
        batch = b
        break
    else:
      return 0
  other = batch + step * max(1, batch // (2 * step))
  ok, mem2 = _try(config, devices, other, hbm)
  if mem2 is None:
    return batch
  per_example = max(1, (mem2["peak_bytes_per_device"] - mem["peak_bytes_per_device"]) / (other - batch))
  guess = int(batch + (hbm - mem["peak_bytes_per_device"]) // per_example) // step * step
  while guess > batch:
    ok, _ = _try(config, devices, guess, hbm)
    if ok:
      return guess
    guess = max(batch, int(guess * 0.9) // step * step)
  return batch


def main(argv=None) -> int:
  from components.common import cli

  parser = cli.ArgumentParser(prog="python -m components.finetune.plan", description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  parser.add_argument("--model", required=True, help="model name, e.g. paligemma2-3b-pt-224")
  parser.add_argument("--trainable", default="full", help="attention | llm | full | freeze-img | regexes")
  parser.add_argument("--batch", type=int, required=True, help="global batch size")
  parser.add_argument("--text-len", type=int, default=128, help="tokens of prefix + suffix (default 128)")
  parser.add_argument("--topology", required=True, help="cpu, v5e:1x1, v5e:2x2, v5e:2x4, v5p:2x2x1, v4:2x2x1, v6e:2x2")
  parser.add_argument("--optimizer", choices=("sgd", "adam", "adamw", "adafactor"), default=None,
                      help="default: the config's (adamw)")
  parser.add_argument("--lora-rank", type=int, default=None, help="LoRA adapters of this rank (default: none)")
  parser.add_argument("--frozen-dtype", default=None, choices=("bfloat16", "float16", "float32"),
                      help="dtype of the frozen weights (default: the config's)")
  parser.add_argument("--remat", default=None, help="auto (the default: the fastest that fits), none, or a "
                      "jax.checkpoint_policies name")
  parser.add_argument("--grad-accum", type=int, default=None, help="micro-batches per step (default: chosen with "
                      "the remat policy)")
  parser.add_argument("--config", default=None, help="start from a finetune config file instead of the defaults")
  parser.add_argument("--no-search", action="store_true", help="skip the largest-batch search")
  args = parser.parse_args(argv)

  os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the host compiles; the TPU exists only as a description
  # No TPU is touched, so concurrent planners need not take libtpu's one-process lock.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  from components.finetune import flops, params
  devices, hbm = _devices(args.topology)
  config = make_config(args)
  if args.batch % len(devices):
    parser.error(f"--batch {args.batch} must be a multiple of the {len(devices)} devices of {args.topology}")
  print(f"{args.model}, trainable={config.trainable}, optimizer={config.optimizer.name}, batch {args.batch}, "
        f"text length {args.text_len} on {args.topology} ({len(devices)} x {devices[0].device_kind}, "
        f"{hbm / GiB:.2f} GiB each)", flush=True)

  start = time.perf_counter()
  decision, mem, candidates = plan_step(config, devices, args.batch, hbm)
  fits = decision is not None and decision.fits
  source = params.resolve_model(config)
  abstract = params.abstract_params(source.model_cfg)
  flops_per_step = args.batch * flops.train_flops_per_example(abstract, source.model_cfg, args.text_len)
  result = {"model": args.model, "topology": args.topology, "devices": len(devices), "batch": args.batch,
            "text_len": args.text_len, "trainable": config.trainable, "optimizer": config.optimizer.name,
            "hbm_bytes_per_device": int(hbm), "fits": bool(fits), "flops_per_step": flops_per_step,
            "compile_seconds": round(time.perf_counter() - start, 1),
            "remat_policy": decision.remat_policy if decision else None,
            "grad_accum_steps": decision.grad_accum_steps if decision else None,
            "remat_candidates": [c.to_json() for c in candidates]}
  for c in candidates:
    print(f"  remat {c.policy}, {c.grad_accum_steps} micro-batch(es): peak "
          f"{'(compile ran out of memory)' if c.peak_bytes_per_device is None else f'{c.peak_bytes_per_device / GiB:.2f} GiB'}"
          f" -> {'fits' if c.fits else 'does NOT fit'}", flush=True)
  if decision is not None:
    print(f"chosen: remat_policy={decision.remat_policy}, grad_accum_steps={decision.grad_accum_steps}", flush=True)
  if mem is None:
    print("does NOT fit: the compiler ran out of device memory at this batch", flush=True)
    result.update(peak_bytes_per_device=None)
  else:
    result.update(mem)
    print(f"per device: weights {mem['weights_bytes_per_device'] / GiB:.2f} GiB, optimizer "
          f"{mem['optimizer_bytes_per_device'] / GiB:.2f} GiB, temporaries {mem['temp_bytes_per_device'] / GiB:.2f} "
          f"GiB, peak bound {mem['peak_bytes_per_device'] / GiB:.2f} of {hbm / GiB:.2f} GiB -> "
          f"{'fits' if fits else 'does NOT fit'}", flush=True)
  print(f"FLOPs per step (analytic, forward + backward): {flops_per_step:.3e}", flush=True)
  if not args.no_search:
    if decision is not None:  # search with the chosen step's policy and micro-batches
      config.unlock()
      config.remat_policy, config.grad_accum_steps = decision.remat_policy, decision.grad_accum_steps
      config.lock()
    best = largest_batch(config, devices, hbm, args.batch, mem if fits else None, len(devices))
    result["max_batch"] = best
    print(f"largest batch that fits: {best}" if best else "no batch fits (try --trainable attention, LoRA, "
          "or a bigger topology)", flush=True)
  print(json.dumps(result), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
