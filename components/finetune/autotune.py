"""`remat_policy="auto"`: the fastest train step that fits in device memory, chosen before the first step by
compiling candidates ahead of time for the devices present (nothing runs, nothing is allocated).

    decision = autotune.choose(setup, config, batch, limit_bytes)
    decision.remat_policy, decision.grad_accum_steps   # the choice
    decision.compiled                                  # that train step, compiled, ready to call
    decision.to_json()                                 # WORKDIR/remat.json, the planner's JSON fields

Candidates, fastest first (each stops the search when it fits):
  none                              every activation is kept for the backward pass;
  dots_with_no_batch_dims_saveable  the outputs of the weight matmuls are kept, the rest (norms, attention,
                                    activations) recomputed: MaxText's "minimal";
  nothing_saveable                  only each layer's input is kept: the layer runs twice.
A candidate fits when its compiled peak per device (argument + output - alias + temporaries + code, the
cautious bound of ../shared/reference/TPU_AOT.md) is at most (1 - MARGIN) of the memory limit, and its
compile did not fail for lack of memory. If even nothing_saveable does not fit, the batch is split into
2, 4, 8, ... micro-batches (gradient accumulation, `grad_accum_steps`) with nothing_saveable until one
fits. With a fixed `remat_policy` the one configured step is compiled and reported the same way.

On a CPU the same search picks no remat (memory is rarely short), and the layer loops are unrolled (see
`unroll_on_cpu`): XLA:CPU runs a scanned backward pass 1.2-1.4x slower (dynamic slices and copies of the
stacked residuals; benchmarks/RESULTS.md).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time

log = logging.getLogger("components.finetune")

GiB = 2**30
REMAT_CANDIDATES = ("none", "dots_with_no_batch_dims_saveable", "nothing_saveable")
MARGIN = 0.1  # fragmentation and what the compiler's estimate leaves out
MAX_GRAD_ACCUM = 64


@dataclasses.dataclass
class Candidate:
  policy: str
  grad_accum_steps: int
  peak_bytes_per_device: int | None  # None: the compile itself ran out of memory
  fits: bool
  compile_seconds: float
  memory: dict | None = None  # memory_analysis fields, per device

  def to_json(self) -> dict:
    return {"policy": self.policy, "grad_accum_steps": self.grad_accum_steps,
            "peak_bytes_per_device": self.peak_bytes_per_device, "fits": self.fits,
            "compile_seconds": round(self.compile_seconds, 1), **(self.memory or {})}


class DoesNotFit(MemoryError):
  """No candidate fits; `candidates` holds what was tried."""

  def __init__(self, message: str, candidates: list[Candidate]):
    super().__init__(message)
    self.candidates = candidates


@dataclasses.dataclass
class Decision:
  remat_policy: str
  grad_accum_steps: int
  limit_bytes: int | None
  candidates: list[Candidate]
  compiled: object = None  # jax.stages.Compiled of the chosen step
  fits: bool = True

  def to_json(self) -> dict:
    return {"remat_policy": self.remat_policy, "grad_accum_steps": self.grad_accum_steps,
            "memory_limit_bytes": self.limit_bytes, "margin": MARGIN, "fits": self.fits,
            "remat_candidates": [c.to_json() for c in self.candidates]}


def memory_limit(devices, limit_gib: float = 0.0) -> int | None:
  """Bytes one device may use: `limit_gib` when set; else the device's own allocator limit; on a CPU the
  host's memory shared by its CPU devices; None when unknown (no limit)."""
  if limit_gib > 0:
    return int(limit_gib * GiB)
  device = devices[0]
  try:
    stats = device.memory_stats()
  except Exception:  # noqa: BLE001 - backends without statistics (CPU, compile-only topologies)
    stats = None
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"])
  if device.platform == "cpu":
    host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return host // max(1, sum(d.platform == "cpu" for d in devices))
  return None


def peak_bytes(compiled) -> tuple[int, dict]:
  """The cautious peak per device of a compiled program, and its memory_analysis fields."""
  mem = compiled.memory_analysis()
  fields = {"argument_bytes": int(mem.argument_size_in_bytes), "output_bytes": int(mem.output_size_in_bytes),
            "alias_bytes": int(mem.alias_size_in_bytes), "temp_bytes": int(mem.temp_size_in_bytes),
            "code_bytes": int(mem.generated_code_size_in_bytes)}
  peak = (fields["argument_bytes"] + fields["output_bytes"] - fields["alias_bytes"] + fields["temp_bytes"]
          + fields["code_bytes"])
  return peak, fields


def is_out_of_memory(error: Exception) -> bool:
  text = str(error)
  return "RESOURCE_EXHAUSTED" in text or "exceeds available HBM" in text or "Out of memory" in text


def unroll_on_cpu(model_cfg: dict, platform: str, overrides) -> dict:
  """On a CPU, the layer loop of each tower without remat unrolled (same stacked parameters), unless the
  config's `model_overrides` set `scan`. Remat keeps the scan: unrolled, XLA merges the recomputation
  with the forward pass again (flax's remat runs with prevent_cse=False, safe only inside a scan)."""
  if platform != "cpu":
    return model_cfg
  return {tower: ({**cfg, "scan": False} if cfg.get("remat_policy") == "none" and overrides[tower].get("scan") is None
                  else dict(cfg))
          for tower, cfg in model_cfg.items()}


def _accum_steps(batch: int, start: int, batch_shards: int):
  """start, then doublings, while each micro-batch still splits evenly over the batch shards."""
  accum = start
  while accum <= MAX_GRAD_ACCUM and batch % (accum * batch_shards) == 0:
    yield accum
    accum *= 2


def choose(compile_step, *, batch: int, batch_shards: int, remat_policy: str, grad_accum_steps: int,
           limit_bytes: int | None) -> Decision:
  """Compiles candidates fastest first; returns the first that fits (or, with a fixed policy, the one).

  `compile_step(policy, grad_accum_steps)` returns a compiled train step (and raises on out-of-memory).
  """
  budget = None if limit_bytes is None else int(limit_bytes * (1 - MARGIN))
  tried = []

  def attempt(policy, accum):
    start = time.perf_counter()
    try:
      compiled = compile_step(policy, accum)
    except Exception as e:  # noqa: BLE001 - out-of-memory is an answer; anything else is a bug
      if not is_out_of_memory(e):
        raise
      compiled, peak, memory = None, None, None
    else:
      peak, memory = peak_bytes(compiled)
    fits = compiled is not None and (budget is None or peak <= budget)
    candidate = Candidate(policy, accum, peak, fits, time.perf_counter() - start, memory)
    tried.append(candidate)
    log.info("remat %s, %d micro-batch(es): peak %s per device of %s (limit x %.2f) -> %s (compiled in %.0f s)",
             policy, accum, _gib(peak), _gib(budget and limit_bytes), 1 - MARGIN, "fits" if fits else "does NOT fit",
             candidate.compile_seconds)
    return compiled, fits

  if remat_policy != "auto":
    compiled, fits = attempt(remat_policy, grad_accum_steps)
    if not fits:
      log.warning("the configured step (remat %s, %d micro-batch(es)) may not fit in device memory; "
                  "remat_policy=auto would choose one that does", remat_policy, grad_accum_steps)
    return Decision(remat_policy, grad_accum_steps, limit_bytes, tried, compiled, fits)

  for accum in _accum_steps(batch, grad_accum_steps, batch_shards):
    policies = REMAT_CANDIDATES if accum == grad_accum_steps else REMAT_CANDIDATES[-1:]
    for policy in policies:
      compiled, fits = attempt(policy, accum)
      if fits:
        log.info("remat auto: chose %s with %d micro-batch(es) of %d examples", policy, accum, batch // accum)
        return Decision(policy, accum, limit_bytes, tried, compiled)
  raise DoesNotFit(
      f"no train step fits in {_gib(limit_bytes)} per device (x {1 - MARGIN:.2f}): even "
      f"{REMAT_CANDIDATES[-1]} with {tried[-1].grad_accum_steps} micro-batch(es) of "
      f"{batch // tried[-1].grad_accum_steps} examples needs {_gib(tried[-1].peak_bytes_per_device)}. "
      "Train fewer weights (config.trainable=attention, or LoRA), use more devices, a smaller text_len, "
      "or raise config.memory_limit_gib if the limit is wrong.", tried)


def _gib(n) -> str:
  return "unknown" if n is None else f"{n / GiB:.2f} GiB"


def compile_step_fn(setup, config, batch_abstract):
  """`compile_step(policy, grad_accum_steps)` for `choose`: the trainer's jitted step with the model's remat
  policy set in both towers, lowered on the abstract state and batch under the setup's mesh."""
  from components.common import sharding
  from components.finetune import state as state_lib

  def compile_step(policy, accum):
    candidate = state_lib.with_remat(setup, config, policy)
    with sharding.use_mesh(setup.mesh):  # the mesh and the activation sharding rules, as the trainer runs
      return state_lib.train_step_fn(candidate, config, grad_accum_steps=accum).lower(
          setup.abstract_state, setup.abstract_frozen, batch_abstract).compile()

  return compile_step
