"""Per-token decode cost: our KV-cache decoder vs naive re-forward decoding, at growing output lengths.

Same random model (`--config`, default `small-v2`), same batch of images and prompts, greedy, eos set to
an id that never occurs so both produce exactly N tokens. The naive decoder (`decode_uncached`, the
reference our tests hold `decode` against) re-runs the whole model, image tower included, over the
prompt plus a buffer of N tokens for every token; the cached one runs the prompt once, then one token
per step. Each is compiled by a warm-up call first. Per-token cost of the cached decoder should stay
about flat as N grows while the naive one grows with N.

Prints wall-clock and CPU time per token (CPU time is what to trust on a shared, oversubscribed machine)
and two ratios: naive / cached at each N, and each decoder's cost at N relative to its cost at the
smallest N. Run: .venv/bin/python benchmarks/decode_cache.py --lengths 8 32 128
"""
import argparse
import time

import jax
import numpy as np

from components.paligemma import Model, configs, decode, decode_uncached


def make_inputs(model_cfg, batch_size, prompt_len, seed=0):
  size = configs.image_size(model_cfg)
  vocab = configs.resolve_llm(model_cfg["llm"])["vocab_size"]
  rng = np.random.default_rng(seed)
  text = np.zeros((batch_size, prompt_len), np.int32)
  for row in range(batch_size):  # prompts of different lengths, right-padded
    n = prompt_len - row % 3
    text[row, :n] = [2, *rng.integers(3, vocab, n - 1)]
  return {"image": rng.uniform(-1, 1, (batch_size, size, size, 3)).astype(np.float32), "text": text,
          "mask_ar": np.zeros_like(text), "mask_input": (text != 0).astype(np.int32)}


def per_token(fn, length, repeats):
  """Seconds per generated token (wall, CPU), best of `repeats` after one warm-up (compile) call."""
  jax.block_until_ready(fn())
  best_wall = best_cpu = float("inf")
  for _ in range(repeats):
    wall, cpu = time.perf_counter(), time.process_time()
    tokens = jax.block_until_ready(fn())
    best_wall = min(best_wall, time.perf_counter() - wall)
    best_cpu = min(best_cpu, time.process_time() - cpu)
  assert (np.asarray(tokens) != 0).all(), "decoding stopped early; the benchmark needs all N tokens"
  return best_wall / length, best_cpu / length


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="small-v2", help="a named config from components.paligemma.configs")
  parser.add_argument("--lengths", type=int, nargs="+", default=[8, 32, 128], help="output lengths N")
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--prompt-len", type=int, default=16)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()

  model_cfg = configs.model_config(args.config)
  model = Model(**model_cfg)
  batch = make_inputs(model_cfg, args.batch, args.prompt_len)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), batch["image"], batch["text"], batch["mask_ar"])["params"]
  never = -1  # an eos id no sampler can produce: every row decodes exactly N tokens

  print(f"{args.config}, batch {args.batch}, prompt {args.prompt_len} tokens + "
        f"{configs.num_image_tokens(model_cfg)} image tokens, {jax.devices()[0].platform}")
  print(f"{'N':>5} {'cached ms/tok':>14} {'naive ms/tok':>13} {'(cpu) cached':>13} {'naive':>8} "
        f"{'naive/cached':>13} {'cached vs N0':>13} {'naive vs N0':>12}")
  base = None
  for n in args.lengths:
    cached = per_token(lambda: decode(model, params, batch, max_decode_len=n, eos_token=never), n, args.repeats)
    naive = per_token(lambda: decode_uncached(model, params, batch, max_decode_len=n, eos_token=never), n,
                      args.repeats)
    base = base or (cached[1], naive[1])
    print(f"{n:>5} {cached[0] * 1e3:>14.2f} {naive[0] * 1e3:>13.2f} {cached[1] * 1e3:>13.2f} {naive[1] * 1e3:>8.2f} "
          f"{naive[1] / cached[1]:>12.1f}x {cached[1] / base[0]:>12.2f}x {naive[1] / base[1]:>11.2f}x")


if __name__ == "__main__":
  main()
