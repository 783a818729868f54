"""The residual stream between layers: f32 (what the model does, as big_vision) vs bf16 (MaxText), both with
bf16 matmuls. The bf16 variant is made here by wrapping the layer call (the scan carry in bf16), not shipped.

  accuracy: loss, logits and gradients of small-v2 (random weights) against an all-f32 reference;
  memory NAME B T: temporaries of the compiled forward+backward (remat nothing_saveable, scan) from
  `memory_analysis()`, nothing executed.

  .venv/bin/python benchmarks/residual_dtype.py accuracy
  .venv/bin/python benchmarks/residual_dtype.py memory paligemma2-3b-pt-224 8 128
"""
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from components import paligemma
from components.paligemma import configs, gemma

BF16 = jnp.bfloat16
orig_block_call = gemma.Block.__call__
orig_gemma_call = gemma.Gemma.__call__
MODE = {"bf16res": False}

def block_call(self, x, cache, positions, attn_mask, mode, deterministic):
  if not MODE["bf16res"]:
    return orig_block_call(self, x, cache, positions, attn_mask, mode, deterministic)
  out, c = orig_block_call(self, x.astype(jnp.float32), cache, positions, attn_mask, mode, deterministic)
  return out.astype(BF16), c

def gemma_call(self, x, positions, attn_mask, *, cache=None, mode="forward", deterministic=True):
  if MODE["bf16res"]:
    x, new_cache = self.layers(x.astype(BF16), cache, positions, attn_mask, mode, deterministic)
    return self.final_norm(x.astype(jnp.float32)), new_cache
  return orig_gemma_call(self, x, positions, attn_mask, cache=cache, mode=mode, deterministic=deterministic)

gemma.Block.__call__ = block_call
gemma.Gemma.__call__ = gemma_call

def batch(cfg, b, t, seed=0):
  rng = np.random.default_rng(seed)
  size = configs.image_size(cfg)
  vocab = configs.resolve_llm(cfg["llm"])["vocab_size"]
  text = rng.integers(4, vocab, (b, t)).astype(np.int32)
  return (rng.uniform(-1, 1, (b, size, size, 3)).astype(np.float32), text, np.zeros((b, t), np.int32))

def loss_fn(model):
  def f(params, image, text, mask_ar):
    logits, _ = model.apply({"params": params}, image, text[:, :-1], mask_ar[:, :-1])
    n = logits.shape[1] - (text.shape[1] - 1)
    lp = jax.nn.log_softmax(logits[:, n:].astype(jnp.float32))
    return -jnp.mean(jnp.take_along_axis(lp, text[:, 1:, None], -1)), logits
  return f

def build(name, dtype, remat="nothing_saveable"):
  cfg = configs.model_config(name)
  for tower in ("llm", "img"):
    cfg[tower] = {**cfg[tower], "dtype": dtype, "remat_policy": remat, "attention": "einsum"}
  return cfg, paligemma.Model(**cfg)

which = sys.argv[1]
if which == "accuracy":
  cfg, ref_model = build("small-v2", "float32")
  params = jax.jit(lambda k: paligemma.init_params(cfg, k))(jax.random.key(0))
  img, text, mask = batch(cfg, 8, 33)
  MODE["bf16res"] = False
  (ref_loss, ref_logits) = jax.jit(loss_fn(ref_model))(params, img, text, mask)
  _, model = build("small-v2", "bfloat16")
  ref_g = jax.jit(jax.grad(lambda *a: loss_fn(ref_model)(*a)[0]))(params, img, text, mask)
  for res in (False, True):
    MODE["bf16res"] = res
    f = jax.jit(loss_fn(model))
    loss, logits = f(params, img, text, mask)
    g = jax.jit(jax.grad(lambda *a: loss_fn(model)(*a)[0]))(params, img, text, mask)
    num = sum(float(jnp.sum((a - b) ** 2)) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(ref_g)))
    den = sum(float(jnp.sum(b ** 2)) for b in jax.tree.leaves(ref_g))
    gerr = (num / den) ** 0.5
    print(f"residual {'bf16' if res else 'f32 '}: |loss - f32 ref| {abs(float(loss) - float(ref_loss)):.2e} "
          f"(loss {float(ref_loss):.4f}); max |logit diff| {float(jnp.abs(logits - ref_logits).max()):.3e}; "
          f"gradient rel. error (global norm) {gerr:.3e}", flush=True)
elif which == "memory":
  name, b, t = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
  cfg, model = build(name, "bfloat16")
  abstract = jax.eval_shape(lambda: paligemma.init_params(cfg, jax.random.key(0)))
  size = configs.image_size(cfg)
  args = (jax.ShapeDtypeStruct((b, size, size, 3), jnp.float32), jax.ShapeDtypeStruct((b, t), jnp.int32),
          jax.ShapeDtypeStruct((b, t), jnp.int32))
  for res in (False, True):
    MODE["bf16res"] = res
    g = jax.jit(jax.value_and_grad(lambda *a: loss_fn(model)(*a)[0]))
    start = time.perf_counter()
    m = g.lower(abstract, *args).compile().memory_analysis()
    print(f"{name} batch {b} text {t}, residual {'bf16' if res else 'f32 '}: temp {m.temp_size_in_bytes/2**30:.2f} GiB, "
          f"args {m.argument_size_in_bytes/2**30:.2f} GiB (compile {time.perf_counter()-start:.0f}s)", flush=True)
