"""Train-step throughput: our JAX trainer vs transformers' PyTorch PaliGemma, same model, same batch, CPU.

One random model (`--config`, default `small-v2`) is built by our trainer (`state.build` / `init_state`,
full fine-tune, AdamW with global-norm clipping 1.0, f32 weights, no remat) and written to transformers'
format with `components.paligemma.to_hf`, then loaded with `PaliGemmaForConditionalGeneration` and
trained with `torch.optim.AdamW` + `clip_grad_norm_(1.0)` on the same batch: images, a prefix-LM text
layout (`token_type_ids` 0 on the prefix, 1 on the suffix) and the loss on the suffix tokens. Each side
runs warm-up steps first (our compile, torch's first-call set-up), then `--steps` timed steps.
Prints examples/s and tokens/s (image + text tokens) of each and the ratio ours / transformers:

  .venv/bin/python benchmarks/train_throughput.py --batch 8 --text-len 32 --steps 5
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
from components.finetune import config as config_lib, state as state_lib  # noqa: E402


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


def ours(config, batch: dict, steps: int, warmup: int):
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
  setup = state_lib.build(config, mesh, total_steps=1000)
  state, frozen = state_lib.init_state(setup, config)
  params = policy.merge(jax.tree.map(np.asarray, state["train"]["params"]), jax.tree.map(np.asarray, frozen))
  step = state_lib.train_step_fn(setup, config)
  placed = {k: jax.device_put(v, sharding.batch_sharding(mesh)) for k, v in batch.items()}
  with sharding.use_mesh(mesh):
    for _ in range(warmup):
      state, metrics = step(state, frozen, placed)
    jax.block_until_ready(state)
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = step(state, frozen, placed)
    jax.block_until_ready(state)
  return (time.perf_counter() - start) / steps, float(metrics["loss"]), params, setup.source.model_cfg


def transformers_train(hf_dir: str, batch: dict, num_image_tokens: int, steps: int, warmup: int):
  import torch
  from transformers import PaliGemmaForConditionalGeneration

  hf = PaliGemmaForConditionalGeneration.from_pretrained(hf_dir, torch_dtype=torch.float32).train()
  opt = torch.optim.AdamW(hf.parameters(), lr=1e-5, betas=(0.9, 0.999), weight_decay=0.0)
  text = batch["text"][:, :-1]
  b = len(text)
  ids = np.concatenate([np.full((b, num_image_tokens), hf.config.image_token_index), text], axis=1)
  token_type = np.concatenate([np.zeros((b, num_image_tokens), np.int64), batch["mask_ar"][:, :-1]], axis=1)
  targets = torch.tensor(batch["text"][:, 1:], dtype=torch.long)
  weights = torch.tensor(batch["mask_loss"][:, 1:], dtype=torch.float32)
  inputs = {"input_ids": torch.tensor(ids), "attention_mask": torch.ones(ids.shape, dtype=torch.long),
            "token_type_ids": torch.tensor(token_type),
            "pixel_values": torch.tensor(batch["image"]).permute(0, 3, 1, 2).contiguous()}

  def one_step():
    logits = hf(**inputs).logits[:, num_image_tokens:].float()
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    loss = ((nll * weights).sum(-1) / weights.sum(-1).clamp(min=1)).mean()  # big_vision's loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
    opt.step()
    return float(loss.detach())

  for _ in range(warmup):
    loss = one_step()
  start = time.perf_counter()
  for _ in range(steps):
    loss = one_step()
  return (time.perf_counter() - start) / steps, loss


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="small-v2", help="a small config of components.paligemma.configs")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--text-len", type=int, default=32)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=2)
  args = parser.parse_args()

  config = config_lib.defaults()
  config.model_name, config.trainable, config.batch_size, config.text_len = args.config, "full", args.batch, args.text_len
  config.optimizer.name, config.optimizer.lr, config.optimizer.warmup_percent = "adamw", 1e-5, 0.0
  config.frozen_dtype, config.remat_policy = "float32", "none"
  config.mesh.data, config.mesh.fsdp = -1, 1
  model_cfg = paligemma.configs.model_config(args.config)
  batch = make_batch(model_cfg, args.batch, args.text_len)
  tokens = args.batch * (paligemma.configs.num_image_tokens(model_cfg) + args.text_len)

  jax_seconds, jax_loss, params, trained_cfg = ours(config, batch, args.steps, args.warmup)
  with tempfile.TemporaryDirectory() as tmp:
    paligemma.to_hf(params, trained_cfg, tmp)
    torch_seconds, torch_loss = transformers_train(tmp, batch, paligemma.configs.num_image_tokens(model_cfg),
                                                   args.steps, args.warmup)
  print(f"model {args.config}, batch {args.batch}, text length {args.text_len}, {jax.device_count()} CPU "
        f"device(s), {args.steps} timed steps")
  print(f"ours (JAX):             {args.batch / jax_seconds:8.2f} examples/s  {tokens / jax_seconds:9.0f} tokens/s"
        f"  (loss {jax_loss:.4f})")
  print(f"transformers (PyTorch): {args.batch / torch_seconds:8.2f} examples/s  {tokens / torch_seconds:9.0f} "
        f"tokens/s  (loss {torch_loss:.4f})")
  print(f"ratio ours / transformers: {torch_seconds / jax_seconds:.2f}x")


if __name__ == "__main__":
  main()
