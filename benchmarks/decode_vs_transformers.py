"""Decode tokens/s: our batched KV-cache decoder vs transformers' `generate`, same model, same prompts, CPU.

One random model (`--config`, default `small-v2`) is written to transformers' format with
`components.paligemma.to_hf` and loaded with `PaliGemmaForConditionalGeneration`. Both decode the same
batch of images and prompts greedily for exactly `--new-tokens` tokens (our eos is set to an id that
never occurs; transformers gets `min_new_tokens`), after one warm-up call each (our compile, torch's
first-call set-up). Prints each rate and the ratio ours / transformers. Run:

  .venv/bin/python benchmarks/decode_vs_transformers.py --batch 8 --new-tokens 32
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from components import paligemma  # noqa: E402

PROMPTS = ["caption en", "detect cat ; dog", "answer en what colour is the car?", "ocr"]


def make_model(config: str, tokenizer_path: str):
  model_cfg = paligemma.configs.model_config(config)
  tokenizer = paligemma.Tokenizer(paligemma.train_small_tokenizer(tokenizer_path))
  model_cfg["llm"]["vocab_size"] = tokenizer.vocab_size
  model = paligemma.Model(**model_cfg)
  size = paligemma.configs.image_size(model_cfg)
  params = model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), jnp.zeros((1, 4), jnp.int32),
                      jnp.zeros((1, 4), jnp.int32))["params"]
  return model, model_cfg, jax.tree.map(np.asarray, params), tokenizer, size


def ours(model, params, batch, new_tokens: int, repeats: int) -> tuple[float, np.ndarray]:
  run = lambda: paligemma.decode(model, params, batch, max_decode_len=new_tokens, eos_token=-1)
  tokens = jax.block_until_ready(run())  # compile
  start = time.perf_counter()
  for _ in range(repeats):
    jax.block_until_ready(run())
  return tokens.size * repeats / (time.perf_counter() - start), np.asarray(tokens)


def transformers_generate(hf_dir: str, batch, num_image_tokens: int, new_tokens: int, repeats: int):
  import torch
  from transformers import PaliGemmaForConditionalGeneration

  hf = PaliGemmaForConditionalGeneration.from_pretrained(hf_dir, torch_dtype=torch.float32).eval()
  image_id = hf.config.image_token_index
  text = np.asarray(batch["text"])
  # Same prompts, same length in every row (the batch is built that way): image tokens, then the prompt.
  ids = np.concatenate([np.full((len(text), num_image_tokens), image_id), text], axis=1)
  inputs = {"input_ids": torch.tensor(ids), "attention_mask": torch.ones(ids.shape, dtype=torch.long),
            "pixel_values": torch.tensor(np.asarray(batch["image"])).permute(0, 3, 1, 2).contiguous()}
  gen = lambda: hf.generate(**inputs, do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
  with torch.inference_mode():
    out = gen()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
      gen()
    seconds = time.perf_counter() - start
  tokens = out[:, ids.shape[1]:].numpy()
  return tokens.size * repeats / seconds, tokens


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="small-v2", help="a small config of components.paligemma.configs")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--new-tokens", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()

  with tempfile.TemporaryDirectory() as tmp:
    model, model_cfg, params, tokenizer, size = make_model(args.config, os.path.join(tmp, "tok.model"))
    prompt = PROMPTS[0]
    encoded = tokenizer.encode_prompt_batch([prompt] * args.batch, len(tokenizer.encode(prompt)) + 2)
    rng = np.random.default_rng(0)
    batch = {"image": rng.uniform(-1, 1, (args.batch, size, size, 3)).astype(np.float32),
             **{k: encoded[k] for k in ("text", "mask_ar", "mask_input")}}
    hf_dir = paligemma.to_hf(params, model_cfg, os.path.join(tmp, "hf"))
    ours_rate, ours_tokens = ours(model, params, batch, args.new_tokens, args.repeats)
    hf_rate, hf_tokens = transformers_generate(hf_dir, batch, paligemma.configs.num_image_tokens(model_cfg),
                                               args.new_tokens, args.repeats)
  # Sanity: the same model should pick the same first tokens (later ones may differ once either picks
  # eos, which transformers suppresses until --new-tokens and we simply continue past).
  agree = float(np.mean(ours_tokens[:, 0] == hf_tokens[:, 0]))
  print(f"config {args.config}, batch {args.batch}, {args.new_tokens} new tokens, {jax.device_count()} "
        f"CPU device(s); first-token agreement {agree:.0%}")
  print(f"ours (KV cache, jitted while_loop): {ours_rate:10.1f} tokens/s")
  print(f"transformers generate:             {hf_rate:10.1f} tokens/s")
  print(f"ratio ours / transformers:         {ours_rate / hf_rate:10.2f}x")


if __name__ == "__main__":
  main()
