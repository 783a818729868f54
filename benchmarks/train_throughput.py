"""Train-step throughput: our JAX trainer vs transformers' PyTorch PaliGemma, same model, same batch, CPU.

One random model (`--config`, default `small-v2`) is built by our trainer with the shipped defaults of
components/finetune/config.py (full fine-tune, AdamW with global-norm clipping 1.0; compute_dtype,
remat_policy "auto" and the CPU choices as the trainer makes them: `state.tune_train_step`), written to
transformers' format with `components.paligemma.to_hf`, loaded with `PaliGemmaForConditionalGeneration`
(f32 weights) and trained with `torch.optim.AdamW` + `clip_grad_norm_(1.0)` on the same batch: images, a
prefix-LM text layout (`token_type_ids` 0 on the prefix, 1 on the suffix) and the loss on the suffix
tokens. transformers runs as it ships (f32) and, with `--autocast`, also under `torch.autocast(bfloat16)`.

Both sides warm up (our compile, torch's first-call set-up), then alternate: each run times `--steps`
steps of every side in turn, so load from other processes falls on both alike. Prints each run's
ms/step and ratio (transformers time / ours: above 1 means ours is faster), the median and range over
`--runs`, the load average before and after, and what the trainer chose:

  .venv/bin/python benchmarks/train_throughput.py --batch 8 --text-len 32 --steps 5 --runs 3 --autocast
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from components import paligemma  # noqa: E402
from components.common import policy, sharding  # noqa: E402
from components.finetune import autotune, config as config_lib, state as state_lib  # noqa: E402


def make_batch(model_cfg, batch: int, text_len: int, seed: int = 0) -> dict:
  """Random images and tokens; the first half of each text is the prefix, the rest is supervised."""
  rng = np.random.default_rng(seed)
  size = paligemma.configs.image_size(model_cfg)
  vocab = paligemma.configs.resolve_llm(model_cfg["llm"])["vocab_size"]
  text = rng.integers(4, vocab, (batch, text_len + 1)).astype(np.int32)
  text[:, 0] = 2  # bos
  suffix = np.zeros((batch, text_len + 1), np.int32)
  suffix[:, text_len // 2:] = 1
  return {"image": rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32), "text": text,
          "mask_ar": suffix, "mask_loss": suffix}


def shipped_config(model: str, batch: int, text_len: int):
  """The trainer's defaults, with only the model, what trains, the batch and a constant learning rate set."""
  config = config_lib.defaults()
  config.model_name, config.trainable, config.batch_size, config.text_len = model, "full", batch, text_len
  config.optimizer.name, config.optimizer.lr, config.optimizer.warmup_percent = "adamw", 1e-5, 0.0
  config.mesh.data, config.mesh.fsdp = -1, 1
  return config


class Ours:
  """The trainer's train step as `trainer.train` builds it (the auto-tuned, ahead-of-time compiled step)."""

  def __init__(self, config, batch: dict):
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
    setup = state_lib.build(config, mesh, total_steps=1000)
    self.decision = state_lib.tune_train_step(setup, config, autotune.memory_limit(list(mesh.devices.flat)))
    setup = state_lib.with_remat(setup, config, self.decision.remat_policy)
    self.state, self.frozen = state_lib.init_state(setup, config)
    self.params = policy.merge(jax.tree.map(np.asarray, self.state["train"]["params"]),
                               jax.tree.map(np.asarray, self.frozen))
    self.model_cfg = setup.model_cfg
    self.batch = {k: jax.device_put(v, sharding.batch_sharding(mesh)) for k, v in batch.items()}
    self.loss = None

  def step(self):
    self.state, metrics = self.decision.compiled(self.state, self.frozen, self.batch)
    self.loss = metrics["loss"]

  def sync(self):
    jax.block_until_ready(self.state)
    return float(self.loss)


class Transformers:
  def __init__(self, hf_dir: str, batch: dict, num_image_tokens: int, autocast: bool):
    import torch
    from transformers import PaliGemmaForConditionalGeneration

    self.torch, self.autocast = torch, autocast
    self.hf = PaliGemmaForConditionalGeneration.from_pretrained(hf_dir, dtype=torch.float32).train()
    self.opt = torch.optim.AdamW(self.hf.parameters(), lr=1e-5, betas=(0.9, 0.999), weight_decay=0.0)
    self.n = num_image_tokens
    text = batch["text"][:, :-1]
    b = len(text)
    ids = np.concatenate([np.full((b, num_image_tokens), self.hf.config.image_token_index), text], axis=1)
    token_type = np.concatenate([np.zeros((b, num_image_tokens), np.int64), batch["mask_ar"][:, :-1]], axis=1)
    self.targets = torch.tensor(batch["text"][:, 1:], dtype=torch.long)
    self.weights = torch.tensor(batch["mask_loss"][:, 1:], dtype=torch.float32)
    self.inputs = {"input_ids": torch.tensor(ids), "attention_mask": torch.ones(ids.shape, dtype=torch.long),
                   "token_type_ids": torch.tensor(token_type),
                   "pixel_values": torch.tensor(batch["image"]).permute(0, 3, 1, 2).contiguous()}
    self.loss = None

  def step(self):
    torch = self.torch
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
      logits = self.hf(**self.inputs).logits[:, self.n:].float()
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), self.targets, reduction="none")
    loss = ((nll * self.weights).sum(-1) / self.weights.sum(-1).clamp(min=1)).mean()  # big_vision's loss
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(self.hf.parameters(), 1.0)
    self.opt.step()
    self.loss = loss

  def sync(self):
    return float(self.loss.detach())


def timed(side, steps: int) -> float:
  """Seconds per step over `steps` steps."""
  side.sync()
  start = time.perf_counter()
  for _ in range(steps):
    side.step()
  side.sync()
  return (time.perf_counter() - start) / steps


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="small-v2", help="a small config of components.paligemma.configs")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--text-len", type=int, default=32)
  parser.add_argument("--steps", type=int, default=5, help="timed steps of each side per run")
  parser.add_argument("--runs", type=int, default=3, help="alternating runs")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--autocast", action="store_true", help="also time transformers under bf16 autocast")
  parser.add_argument("--compute-dtype", default=None, help="ours: this compute_dtype instead of the shipped one")
  args = parser.parse_args()

  load_before = os.getloadavg()
  config = shipped_config(args.config, args.batch, args.text_len)
  if args.compute_dtype:
    config.compute_dtype = args.compute_dtype
  batch = make_batch(paligemma.configs.model_config(args.config), args.batch, args.text_len)
  ours = Ours(config, batch)
  sides = {"ours": ours}
  with tempfile.TemporaryDirectory() as tmp:
    paligemma.to_hf(ours.params, ours.model_cfg, tmp)
    n_img = paligemma.configs.num_image_tokens(ours.model_cfg)
    sides["transformers f32"] = Transformers(tmp, batch, n_img, autocast=False)
    if args.autocast:
      sides["transformers bf16 autocast"] = Transformers(tmp, batch, n_img, autocast=True)
  for side in sides.values():
    for _ in range(args.warmup):
      side.step()
  seconds = {name: [] for name in sides}
  for _ in range(args.runs):
    for name, side in sides.items():
      seconds[name].append(timed(side, args.steps))
  load_after = os.getloadavg()

  tokens = args.batch * (n_img + args.text_len)
  print(f"model {args.config}, batch {args.batch}, text length {args.text_len}, {jax.device_count()} CPU "
        f"device(s), {os.cpu_count()} cores, {args.runs} alternating runs of {args.steps} steps each")
  llm = ours.model_cfg["llm"]
  print(f"ours as the trainer chose: compute_dtype {config.compute_dtype}, remat {ours.decision.remat_policy}, "
        f"{ours.decision.grad_accum_steps} micro-batch(es), layer loops {'scanned' if llm['scan'] else 'unrolled'}, "
        f"attention {llm['attention']}")
  for name, secs in seconds.items():
    runs = " ".join(f"{s * 1e3:7.1f}" for s in secs)
    print(f"{name:27s} ms/step per run: {runs}   median {np.median(secs) * 1e3:7.1f}  "
          f"({args.batch / np.median(secs):6.2f} examples/s, {tokens / np.median(secs):7.0f} tokens/s, "
          f"loss {sides[name].sync():.4f})")
  for name, secs in seconds.items():
    if name == "ours":
      continue
    ratios = [theirs / mine for theirs, mine in zip(secs, seconds["ours"])]
    print(f"ratio ours / {name} (their time / ours, per run): {' '.join(f'{r:.2f}x' for r in ratios)}; "
          f"median {np.median(ratios):.2f}x, range {min(ratios):.2f}x-{max(ratios):.2f}x")
  print(f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, after "
        f"{load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f} (1/5/15 min)")


if __name__ == "__main__":
  main()
