"""The GPU suite in one command: our trainer and decoder against transformers on one accelerator.

  python benchmarks/gpu_suite.py                 # one H200: about 8 minutes; appends to benchmarks/RESULTS.md
  python benchmarks/gpu_suite.py --smoke         # tiny shapes on whatever device there is (tests, CPU)

Measured, PaliGemma 2 3B-224 with random weights, batch 32, text 128 (12,288 tokens a step):
  ours-train   the train step as the trainer builds it from the *shipped defaults* (components/finetune/
               config.py: compute_dtype bfloat16, remat_policy "auto", AdamW), full fine-tune; then each remat
               candidate (autotune.REMAT_CANDIDATES) fixed: tokens/s, MFU (model FLOPs: flops.py; peak from
               flops.PEAK_FLOPS), peak memory (the compiled bound and the device's peak_bytes_in_use).
  hf-train     transformers' PaliGemmaForConditionalGeneration (f32 weights, bf16 autocast, fused AdamW), the
               same loss; batch 32, then with gradient checkpointing, then smaller batches: its best that fits.
  ours-decode  greedy decoding, batch 16, 16-token prompts, 64 new tokens, bf16 weights: tokens/s and the
               fraction of the weight-read roofline (LLM weight bytes read per step / memory bandwidth).
  hf-decode    transformers' `generate` on the same model, prompts and lengths.
  pipeline     `python -m pipelines.local --smoke`: the whole DAG with the 3B config, random weights and a
               tiny synthetic dataset, seconds per step (needs the repo's full dependencies; skipped if not).
Each part runs in its own process (JAX and PyTorch each get the whole device) under what is left of
`--budget-s`; the table is printed and appended to `--results` with the date and device.

Needs only jax, flax, optax, torch, transformers and this repository (plus ml_collections, the finetune
config's pure-Python dependency); the finetune modules it imports load neither grain nor orbax.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTS = ("ours-train", "hf-train", "ours-decode", "hf-decode", "pipeline")
# Seconds each part may take at most (the suite also stops at --budget-s); the pipeline gets what is left.
PART_BUDGET_S = {"ours-train": 270, "hf-train": 80, "ours-decode": 60, "hf-decode": 40, "pipeline": 480}
FULL = dict(model="paligemma2-3b-pt-224", batch=32, text_len=128, steps=5, decode_batch=16, prompt_len=16,
            new_tokens=64)
SMOKE = dict(model="tiny-v2", batch=4, text_len=8, steps=2, decode_batch=2, prompt_len=4, new_tokens=4)
# Memory bandwidth per device (bytes/s) for the decode roofline, from the vendors' spec sheets.
HBM_BYTES_PER_S = {"NVIDIA H200": 4.8e12, "NVIDIA H100": 3.35e12, "NVIDIA A100": 2.0e12, "NVIDIA L4": 0.3e12}
GiB = 2**30


def _row(run: str, **values) -> None:
  """One result line on stdout, for the orchestrator."""
  print("ROW " + json.dumps({"run": run, **values}), flush=True)


def _random_batch(model_cfg, batch, text_len, seed=0):
  import numpy as np
  from components import paligemma
  rng = np.random.default_rng(seed)
  size = paligemma.configs.image_size(model_cfg)
  vocab = paligemma.configs.resolve_llm(model_cfg["llm"])["vocab_size"]
  text = rng.integers(4, vocab, (batch, text_len + 1)).astype(np.int32)
  text[:, 0] = 2
  suffix = np.zeros((batch, text_len + 1), np.int32)
  suffix[:, text_len // 2:] = 1
  return {"image": rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32), "text": text,
          "mask_ar": suffix, "mask_loss": suffix}


# --- ours: the train step -------------------------------------------------------------------------------

def ours_train(s: dict) -> None:
  import jax
  from components import paligemma
  from components.common import sharding
  from components.finetune import autotune, config as config_lib, flops, state as state_lib

  config = config_lib.defaults()  # the shipped defaults; only the run's shape is set
  config.model_name, config.trainable, config.batch_size, config.text_len = s["model"], "full", s["batch"], s["text_len"]
  devices = jax.devices()[:1]
  mesh = sharding.make_mesh(1, 1, devices=devices)
  setup = state_lib.build(config, mesh, total_steps=1000)
  limit = autotune.memory_limit(devices, config.memory_limit_gib)
  flops_per_step = s["batch"] * flops.train_flops_per_example(setup.abstract_full, setup.model_cfg, s["text_len"])
  tokens = s["batch"] * (paligemma.configs.num_image_tokens(setup.model_cfg) + s["text_len"])
  state, frozen = state_lib.init_state(setup, config)
  batch = {k: jax.device_put(v, sharding.batch_sharding(mesh)) for k, v in
           _random_batch(setup.model_cfg, s["batch"], s["text_len"]).items()}

  def run(compiled, label, peak_bound):
    nonlocal state
    for _ in range(2):
      state, metrics = compiled(state, frozen, batch)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(s["steps"]):
      state, metrics = compiled(state, frozen, batch)
    jax.block_until_ready(metrics)
    seconds = (time.perf_counter() - start) / s["steps"]
    stats = _memory_stats(devices[0])
    row = dict(tokens_per_s=tokens / seconds, mfu=flops.mfu(flops_per_step, seconds, devices),
               peak_gib=peak_bound / GiB, device_peak_gib=stats and stats.get("peak_bytes_in_use", 0) / GiB,
               step_s=seconds, loss=float(metrics["loss"]))
    _row(label, **row)
    return row

  decision = state_lib.tune_train_step(setup, config, limit)
  tried = {c.policy: c for c in decision.candidates if c.grad_accum_steps == 1}
  shipped = (f"ours, shipped defaults (compute_dtype {config.compute_dtype}, remat auto -> {decision.remat_policy}, "
             f"{decision.grad_accum_steps} micro-batch(es))")
  chosen = ((decision.remat_policy, decision.grad_accum_steps),
            run(decision.compiled, shipped, decision.candidates[-1].peak_bytes_per_device))
  del decision
  for policy in autotune.REMAT_CANDIDATES:
    label = f"ours, remat {policy}"
    if chosen[0] == (policy, 1):  # the shipped default's own step: not compiled twice
      _row(label, **chosen[1], note="= the shipped defaults' choice")
      continue
    if policy in tried and not tried[policy].fits:
      peak = tried[policy].peak_bytes_per_device
      _row(label, note=f"does not fit: asks {peak / GiB:.1f} GiB" if peak else "does not fit (compile ran out)",
           peak_gib=peak and peak / GiB)
      continue
    fixed = config.copy_and_resolve_references()
    fixed.remat_policy = policy
    candidate = state_lib.tune_train_step(setup, fixed, limit)
    if not candidate.fits:
      peak = candidate.candidates[-1].peak_bytes_per_device
      _row(label, note=f"does not fit: asks {peak / GiB:.1f} GiB" if peak else "does not fit", peak_gib=peak and peak / GiB)
      continue
    run(candidate.compiled, label, candidate.candidates[-1].peak_bytes_per_device)
    del candidate


def _memory_stats(device):
  try:
    return device.memory_stats()
  except Exception:  # noqa: BLE001 - CPU: no statistics
    return None


# --- transformers: the train step -----------------------------------------------------------------------

def _hf_model(model_cfg, dtype):
  """transformers' PaliGemma built from our model_cfg (random weights, on the device; no files)."""
  import jax
  import torch
  from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration
  from components import paligemma
  from components.paligemma import _hf_layout, hf
  from components.finetune import params

  abstract = params.abstract_params(model_cfg)
  flat = {"/".join(str(k.key) for k in path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(abstract)}
  dims = _hf_layout.dims_from_params(flat)
  import numpy as np
  config = PaliGemmaConfig.from_dict(hf._hf_config(dims, paligemma.configs.resolve_llm(model_cfg["llm"]),
                                                   paligemma.configs.resolve_img(model_cfg["img"]),
                                                   np.dtype(np.float32)))
  device = "cuda" if torch.cuda.is_available() else "cpu"
  with torch.device(device):
    model = PaliGemmaForConditionalGeneration(config).to(dtype)
  return model, device


def hf_train(s: dict) -> None:
  import torch
  from components import paligemma
  from components.finetune import flops, params

  model_cfg = paligemma.configs.model_config(s["model"])
  n_img = paligemma.configs.num_image_tokens(model_cfg)
  abstract = params.abstract_params(model_cfg)
  model, device = _hf_model(model_cfg, torch.float32)
  model.train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device == "cuda")
  kind = torch.cuda.get_device_name() if device == "cuda" else ""
  peak_flops = next((v for k, v in flops.PEAK_FLOPS.items() if kind.startswith(k)), None)
  attempts = [(s["batch"], False), (s["batch"], True), (s["batch"] // 2, False), (s["batch"] // 2, True),
              (s["batch"] // 4, True)][:2 if s is SMOKE else None]
  best = None
  for batch_size, checkpointing in attempts:
    label = f"transformers, batch {batch_size}" + (", gradient checkpointing" if checkpointing else "")
    (model.gradient_checkpointing_enable if checkpointing else model.gradient_checkpointing_disable)()
    data = _random_batch(model_cfg, batch_size, s["text_len"])
    text = torch.tensor(data["text"][:, :-1], device=device)
    ids = torch.cat([torch.full((batch_size, n_img), model.config.image_token_index, device=device), text], 1)
    token_type = torch.cat([torch.zeros((batch_size, n_img), dtype=torch.long, device=device),
                            torch.tensor(data["mask_ar"][:, :-1], device=device)], 1)
    targets = torch.tensor(data["text"][:, 1:], dtype=torch.long, device=device)
    weights = torch.tensor(data["mask_loss"][:, 1:], dtype=torch.float32, device=device)
    pixels = torch.tensor(data["image"], device=device).permute(0, 3, 1, 2).contiguous()

    def step():
      with torch.autocast(device, dtype=torch.bfloat16):
        logits = model(input_ids=ids, pixel_values=pixels, token_type_ids=token_type,
                       attention_mask=torch.ones_like(ids)).logits[:, n_img:].float()
      nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
      loss = ((nll * weights).sum(-1) / weights.sum(-1).clamp(min=1)).mean()
      opt.zero_grad(set_to_none=True)
      loss.backward()
      torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
      opt.step()
      return loss

    try:
      if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
      for _ in range(2):
        step()
      _sync(device)
      start = time.perf_counter()
      for _ in range(s["steps"]):
        loss = step()
      _sync(device)
    except torch.OutOfMemoryError:
      opt.zero_grad(set_to_none=True)
      _row(label, note="out of memory")
      continue
    seconds = (time.perf_counter() - start) / s["steps"]
    tokens = batch_size * (n_img + s["text_len"])
    flops_per_step = batch_size * flops.train_flops_per_example(abstract, model_cfg, s["text_len"])
    row = dict(tokens_per_s=tokens / seconds, mfu=peak_flops and flops_per_step / seconds / peak_flops,
               device_peak_gib=torch.cuda.max_memory_allocated() / GiB if device == "cuda" else None,
               step_s=seconds, loss=float(loss))
    _row(label, **row)
    if best is None or row["tokens_per_s"] > best[1]["tokens_per_s"]:
      best = (label, row)
  if best:
    _row(f"transformers' best that fits ({best[0].removeprefix('transformers, ')})", **best[1])


def _sync(device):
  import torch
  if device == "cuda":
    torch.cuda.synchronize()


# --- decoding -------------------------------------------------------------------------------------------

def _decode_inputs(model_cfg, s):
  import numpy as np
  from components import paligemma
  rng = np.random.default_rng(0)
  size = paligemma.configs.image_size(model_cfg)
  vocab = paligemma.configs.resolve_llm(model_cfg["llm"])["vocab_size"]
  text = rng.integers(4, vocab, (s["decode_batch"], s["prompt_len"])).astype(np.int32)
  text[:, 0] = 2
  return {"image": rng.uniform(-1, 1, (s["decode_batch"], size, size, 3)).astype(np.float32), "text": text,
          "mask_ar": np.zeros_like(text), "mask_input": np.ones_like(text)}


def _roofline(weight_bytes: int, device_kind: str, batch: int):
  """Tokens/s if each step only read the LLM's weights once at the device's memory bandwidth."""
  bandwidth = next((bw for name, bw in HBM_BYTES_PER_S.items() if device_kind.startswith(name)), None)
  return bandwidth and batch * bandwidth / weight_bytes


def ours_decode(s: dict) -> None:
  import jax
  import jax.numpy as jnp
  from components import paligemma

  model_cfg = paligemma.configs.model_config(s["model"])
  model_cfg = {tower: {**cfg, "dtype": "bfloat16"} for tower, cfg in model_cfg.items()}
  model = paligemma.Model(**model_cfg)
  batch = _decode_inputs(model_cfg, s)
  init = jax.jit(lambda key: jax.tree.map(lambda x: x.astype(jnp.bfloat16), model.init(
      key, batch["image"][:1], batch["text"][:1], batch["mask_ar"][:1])["params"]))
  params = init(jax.random.PRNGKey(0))

  def seconds(n):
    run = lambda: jax.block_until_ready(paligemma.decode(model, params, batch, max_decode_len=n, eos_token=-1))
    run()
    start = time.perf_counter()
    for _ in range(2):
      run()
    return (time.perf_counter() - start) / 2

  total, first = seconds(s["new_tokens"]), seconds(1)
  # One decoding step, prefill excluded; None when timing noise swamps it (a few tiny steps in --smoke).
  step = (total - first) / (s["new_tokens"] - 1) if total > first else None
  weight_bytes = sum(x.nbytes for x in jax.tree.leaves(params["llm"]))
  bound = _roofline(weight_bytes, jax.devices()[0].device_kind, s["decode_batch"])
  _row("ours, decode (greedy, KV cache, bf16)", tokens_per_s=s["decode_batch"] * s["new_tokens"] / total,
       step_tokens_per_s=step and s["decode_batch"] / step,
       roofline=step and bound and s["decode_batch"] / step / bound, weight_gb=weight_bytes / 1e9, step_s=step)


def hf_decode(s: dict) -> None:
  import torch
  from components import paligemma

  model_cfg = paligemma.configs.model_config(s["model"])
  n_img = paligemma.configs.num_image_tokens(model_cfg)
  model, device = _hf_model(model_cfg, torch.bfloat16)
  model.eval()
  batch = _decode_inputs(model_cfg, s)
  text = torch.tensor(batch["text"], device=device)
  ids = torch.cat([torch.full((len(text), n_img), model.config.image_token_index, device=device), text], 1)
  pixels = torch.tensor(batch["image"], device=device, dtype=torch.bfloat16).permute(0, 3, 1, 2).contiguous()
  run = lambda: model.generate(input_ids=ids, pixel_values=pixels, attention_mask=torch.ones_like(ids),
                               do_sample=False, max_new_tokens=s["new_tokens"], min_new_tokens=s["new_tokens"])
  with torch.inference_mode():
    run()
    _sync(device)
    start = time.perf_counter()
    for _ in range(2):
      run()
    _sync(device)
  seconds = (time.perf_counter() - start) / 2
  _row("transformers generate (greedy, bf16)", tokens_per_s=s["decode_batch"] * s["new_tokens"] / seconds)


# --- the pipeline ---------------------------------------------------------------------------------------

def pipeline(s: dict, timeout: float) -> None:
  import importlib.util
  missing = [m for m in ("kfp", "grain", "orbax", "sentencepiece", "PIL") if importlib.util.find_spec(m) is None]
  if missing:
    _row("pipelines.local --smoke", note=f"skipped: needs {', '.join(missing)} (pip install -e .)")
    return
  import tempfile
  with tempfile.TemporaryDirectory() as out:
    cmd = [sys.executable, "-m", "pipelines.local", "--smoke", "--smoke-model", s["model"], "--output", out]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
      _row("pipelines.local --smoke", note=f"failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
      return
    with open(os.path.join(out, "summary.json")) as f:
      steps = json.load(f).get("step_seconds", {})
  _row(f"pipelines.local --smoke ({s['model']}, random weights)", wall_s=time.perf_counter() - start,
       note=", ".join(f"{k} {v:.0f} s" for k, v in steps.items()))


# --- the orchestrator -----------------------------------------------------------------------------------

def _device() -> str:
  code = "import jax; d = jax.devices()[0]; print(f'{len(jax.devices())} x {d.device_kind} ({d.platform})')"
  return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip()


def _fmt(value, spec):
  return "" if value is None else format(value, spec)


def _gib(value) -> str:
  return f"{value:.1f} GiB" if value >= 1 else f"{value * 1024:.1f} MiB"


def table(rows: list[dict]) -> str:
  lines = ["| run | tokens/s | MFU / roofline | peak memory (bound / device) | note |", "|---|---|---|---|---|"]
  for r in rows:
    util = r.get("mfu") if r.get("mfu") is not None else r.get("roofline")
    memory = " / ".join(_gib(v) for v in (r.get("peak_gib"), r.get("device_peak_gib")) if v)
    note = r.get("note", "")
    if r.get("step_tokens_per_s"):
      note = f"{r['step_tokens_per_s']:,.0f} tokens/s per step without prefill; {r['weight_gb']:.2f} GB of weights " + note
    lines.append(f"| {r['run']} | {_fmt(r.get('tokens_per_s'), ',.0f')} | {_fmt(util and 100 * util, '.1f')}"
                 f"{'%' if util else ''} | {memory} | {note} |")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--smoke", action="store_true", help="tiny shapes (a CPU check of the suite itself)")
  parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {PARTS}")
  parser.add_argument("--budget-s", type=float, default=480, help="stop starting parts after this many seconds")
  parser.add_argument("--results", default=os.path.join(REPO, "benchmarks", "RESULTS.md"),
                      help="Markdown file the table is appended to ('' = print only)")
  parser.add_argument("--part", help=argparse.SUPPRESS)  # internal: run one part in this process
  args = parser.parse_args(argv)
  shapes = SMOKE if args.smoke else FULL

  if args.part:
    funcs = {"ours-train": ours_train, "hf-train": hf_train, "ours-decode": ours_decode, "hf-decode": hf_decode}
    if args.part == "pipeline":
      pipeline(shapes, timeout=args.budget_s)
    else:
      funcs[args.part](shapes)
    return 0

  parts = [p for p in args.parts.split(",") if p]
  unknown = set(parts) - set(PARTS)
  if unknown:
    parser.error(f"--parts: unknown {sorted(unknown)}; choose from {PARTS}")
  start, rows = time.perf_counter(), []
  device = _device()
  print(f"benchmarks/gpu_suite.py on {device}: {shapes}", flush=True)
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
  env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "paligemma-pipelines",
                                                           "jax"))  # reruns skip the 3B compiles
  for part in parts:
    left = args.budget_s - (time.perf_counter() - start)
    if left < 10:
      rows.append({"run": part, "note": f"not run: the {args.budget_s:.0f} s budget is spent"})
      continue
    # The part budgets are sized for the GPU's 10-minute call; a --smoke run on a CPU only checks that every
    # part works, and its imports alone can take longer on a busy machine.
    timeout = left if args.smoke else min(PART_BUDGET_S[part], left)
    cmd = [sys.executable, os.path.abspath(__file__), "--part", part, "--budget-s", str(timeout)]
    cmd += ["--smoke"] if args.smoke else []
    part_start = time.perf_counter()
    try:
      proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout + 5)
      output, failed = proc.stdout, proc.returncode and (proc.stderr.strip().splitlines() or ["?"])[-1]
    except subprocess.TimeoutExpired as e:
      output = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
      failed = f"cut at {timeout:.0f} s"
    new = [json.loads(line[4:]) for line in output.splitlines() if line.startswith("ROW ")]
    if failed:
      new.append({"run": part, "note": f"failed: {failed}"})
    rows += new
    print(f"{part}: {time.perf_counter() - part_start:.0f} s", flush=True)
    for r in new:
      print("  " + json.dumps(r), flush=True)

  text = table(rows)
  total = time.perf_counter() - start
  load = " ".join(f"{x:.2f}" for x in os.getloadavg())
  print(text)
  print(f"total {total:.0f} s; load average {load}")
  if args.results:
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    with open(args.results, "a") as f:
      f.write(f"\n## {stamp} — benchmarks/gpu_suite.py{' --smoke' if args.smoke else ''} on {device} "
              f"({total:.0f} s)\n\nShapes: {shapes}; host load average at the end {load}.\n\n{text}\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
