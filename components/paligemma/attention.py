"""Dot-product attention for both towers: the reference einsum, and the fused kernels a backend has.

    out = attend(q, k, v, mask, impl="einsum", dtype="bfloat16", softcap=50.0)

Axes: B batch, T queries, S keys, N query heads, K key/value heads (N = K*G), H head dim.
q [B, T, N, H], k/v [B, S, K, H], mask bool[B, T, S] (True: may attend) or None -> [B, T, N, H].

Implementations (`llm.attention` / `img.attention` in a model_cfg):
  einsum  the reference (big_vision's math): logits in f32 from `dtype` inputs, soft-cap, mask, f32
          softmax, probabilities cast to `dtype` for the weighted sum. The fixtures' parity tests run it.
  xla     `jax.nn.dot_product_attention(implementation="xla")`: the same math through jax's fused-attention
          API (on CPU it checks that path against einsum); no soft-cap.
  cudnn   `jax.nn.dot_product_attention(implementation="cudnn")`: cuDNN flash attention on NVIDIA GPUs,
          bf16/f16 only, no soft-cap.
  splash  Pallas splash attention on TPU (it applies Gemma 2's soft-cap inside the kernel), batch-mapped
          over the mesh's batch axes; off TPU the same kernel runs in Pallas' interpreter (tests only: slow).
  auto    what `choose` picks for the backend: TPU splash for the LLM when its head dim fills the 128-lane
          registers; GPU cudnn for bf16/f16 towers without soft-cap (SigLIP, Gemma 1), einsum otherwise
          (Gemma 2 on GPU: no cuDNN kernel applies a soft-cap); CPU einsum.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from components.paligemma import precision, sharding

MASKED = -2.3819763e38  # big_vision's (and gemma's) masked attention logit.
IMPLEMENTATIONS = ("auto", "einsum", "xla", "cudnn", "splash")
_SPLASH_BLOCK = 128  # splash's default block sizes: sequences are padded to a multiple of this.
_HOPPER_OR_LATER = ("H100", "H200", "H800", "H20", "GH200", "B100", "B200", "GB200")


def choose(impl: str, *, platform: str, tower: str, dtype: str, softcap: float = 0.0, head_dim: int = 0,
           device_kind: str = "") -> str:
  """The implementation `impl` ("auto" or a name) resolves to on `platform` ("cpu", "gpu", "tpu");
  `device_kind` (jax's, e.g. "NVIDIA H200") tells cuDNN's head-dim limit: 256 from Hopper on, else 128."""
  if impl not in IMPLEMENTATIONS:
    raise ValueError(f"{tower}.attention={impl!r}; expected one of {IMPLEMENTATIONS}.")
  if impl != "auto":
    if softcap and impl in ("xla", "cudnn"):
      raise ValueError(f"{tower}.attention={impl!r} cannot apply the attention soft-cap ({softcap}) of this model; "
                       "use 'einsum' or, on TPU, 'splash'.")
    return impl
  low_precision = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
  if platform == "tpu" and tower == "llm" and head_dim % 128 == 0:
    return "splash"
  cudnn_head_dim = 256 if any(gpu in device_kind for gpu in _HOPPER_OR_LATER) else 128
  if platform in ("gpu", "cuda") and low_precision and not softcap and head_dim % 8 == 0 and \
      head_dim <= cudnn_head_dim:
    return "cudnn"
  return "einsum"


def attend(q, k, v, mask, *, impl: str, dtype, softcap: float = 0.0, scale: float = 1.0):
  """Attention of q [B, T, N, H] over k/v [B, S, K, H] under mask bool[B, T, S] -> [B, T, N, H] in `dtype`."""
  if impl == "einsum":
    return _einsum(q, k, v, mask, dtype=dtype, softcap=softcap, scale=scale)
  if impl in ("xla", "cudnn"):
    if softcap:
      raise ValueError(f"attention {impl!r} has no soft-cap; use 'einsum' or 'splash'.")
    return jax.nn.dot_product_attention(
        q.astype(dtype), k.astype(dtype), v.astype(dtype), mask=None if mask is None else mask[:, None],
        scale=scale, implementation=impl)
  if impl == "splash":
    return _splash(q, k, v, mask, dtype=dtype, softcap=softcap, scale=scale)
  raise ValueError(f"attention implementation {impl!r}; expected one of {IMPLEMENTATIONS[1:]} (after `choose`).")


def attend_cached(q, k_cache, v_cache, k_new, v_new, mask, *, dtype, softcap: float = 0.0):
  """One decoding step: q [B, 1, N, H] over the cache's slots k/v_cache [B, S, K, H] that `mask` bool[B, 1, S]
  allows, plus the token's own k/v_new [B, 1, K, H]. The einsum reference's math; the cache is only read."""
  b, t, n, h = q.shape
  heads_kv = k_cache.shape[2]
  q = q.reshape(b, t, heads_kv, n // heads_kv, h).astype(dtype)
  logits = jnp.concatenate([precision.einsum_f32("BTKGH,BSKH->BKGTS", q, k.astype(dtype))
                            for k in (k_cache, k_new)], axis=-1)  # [B, K, G, 1, S + 1]
  if softcap:
    logits = jnp.tanh(logits / softcap) * softcap
  mask = jnp.concatenate([mask, jnp.ones((b, t, 1), bool)], axis=-1)
  probs = jax.nn.softmax(jnp.where(mask[:, None, None, :, :], logits, MASKED), axis=-1).astype(dtype)
  encoded = (precision.einsum("BKGTS,BSKH->BTKGH", probs[..., :-1], v_cache.astype(dtype))
             + precision.einsum("BKGTS,BSKH->BTKGH", probs[..., -1:], v_new.astype(dtype)))
  return encoded.reshape(b, t, n, h)


def _einsum(q, k, v, mask, *, dtype, softcap, scale):
  b, t, n, h = q.shape
  heads_kv = k.shape[2]
  if scale != 1.0:
    q = q * scale
  q = q.reshape(b, t, heads_kv, n // heads_kv, h)  # query head n uses kv head n // G.
  logits = precision.einsum_f32("BTKGH,BSKH->BKGTS", q.astype(dtype), k.astype(dtype))
  if softcap:
    logits = jnp.tanh(logits / softcap) * softcap
  if mask is not None:
    logits = jnp.where(mask[:, None, None, :, :], logits, MASKED)
  probs = jax.nn.softmax(logits, axis=-1)
  encoded = precision.einsum("BKGTS,BSKH->BTKGH", probs.astype(dtype), v.astype(dtype))
  return encoded.reshape(b, t, n, h)


def _splash(q, k, v, mask, *, dtype, softcap, scale):
  """Splash attention, vmapped over examples and kv heads (each an MQA kernel over its G query heads).

  The mask is dynamic (prefix-LM differs per example), so the kernel is built from it inside the batch map.
  Sequences are padded to whole 128-blocks; padded queries attend to themselves (splash needs no empty rows)
  and are dropped again.
  """
  b, t, n, h = q.shape
  s, heads_kv = k.shape[1], k.shape[2]
  if mask is None:
    mask = jnp.ones((b, t, s), bool)
  if scale != 1.0:
    q = q * scale
  t_pad, s_pad = -t % _SPLASH_BLOCK, -s % _SPLASH_BLOCK
  q = jnp.pad(q.astype(dtype), ((0, 0), (0, t_pad), (0, 0), (0, 0)))
  k, v = (jnp.pad(x.astype(dtype), ((0, 0), (0, s_pad), (0, 0), (0, 0))) for x in (k, v))
  mask = jnp.pad(mask, ((0, 0), (0, t_pad), (0, s_pad)))
  if t_pad:
    rows = jnp.arange(t + t_pad)[:, None] >= t
    mask = mask | (rows & (jnp.arange(s + s_pad)[None, :] == jnp.arange(t + t_pad)[:, None]))
  q = q.reshape(b, t + t_pad, heads_kv, n // heads_kv, h).transpose(0, 2, 3, 1, 4)  # [B, K, G, T, H]
  k, v = (x.transpose(0, 2, 1, 3) for x in (k, v))  # [B, K, S, H]

  def one_batch(q, k, v, mask):
    run = functools.partial(_splash_one, softcap=softcap)
    return jax.lax.platform_dependent(q, k, v, mask, tpu=functools.partial(run, interpret=False),
                                      default=functools.partial(run, interpret=True))

  out = sharding.map_over_batch(one_batch, q, k, v, mask)  # [B, K, G, T, H]
  return out.transpose(0, 3, 1, 2, 4).reshape(b, t + t_pad, n, h)[:, :t]


def _splash_one(q, k, v, mask, *, softcap, interpret):
  """q [B, K, G, T, H], k/v [B, K, S, H], mask [B, T, S] on one shard of the batch."""
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash

  groups = q.shape[2]

  def kernel(q, k, v, mask):  # one example, one kv head: q [G, T, H], k/v [S, H], mask [T, S]
    attention = splash.make_splash_mqa(
        jnp.broadcast_to(mask, (groups, *mask.shape)), head_shards=1, q_seq_shards=1,
        attn_logits_soft_cap=softcap or None, interpret=interpret)
    # make_splash_mqa turns every MaskInfo field into an array, the `is_dynamic_mask` flag too, which a
    # jit trace cannot branch on: it is a Python constant (True: the mask above is an array).
    for name in ("fwd_mask_info", "dq_mask_info", "dkv_mask_info"):
      info = getattr(attention, name)
      if info is not None:
        setattr(attention, name, info._replace(is_dynamic_mask=True))
    return attention(q, k, v)

  return jax.vmap(jax.vmap(kernel, in_axes=(0, 0, 0, None)))(q, k, v, mask)
