"""Gemma 1 and 2 decoder as big_vision's PaliGemma runs it, with parameters named as in big_vision
(`llm/embedder/input_embedding`, `llm/layers/...` stacked on a leading depth axis, `llm/final_norm`).

Axes: B batch, T query length, S key/value length (the cache length when decoding), N query heads,
K key/value heads, G query heads per kv head (N = K*G), H head dim, E width, F mlp dim, V vocab.

Activations stay float32 between layers whatever the parameter dtype; `dtype` only sets the dtype of
the matmuls (float32, or bfloat16 to halve their cost): each layer casts its f32 (master) weights to it.
Norms, softmax and attention logits are f32. `attention` picks the attention implementation (attention.py;
"auto": by backend); decoding steps ("extend") always use the reference einsum.

The layers run in one of three modes (a static string):
- "forward": training / scoring; no cache.
- "prefill": as forward, but k/v are rounded to `cache_dtype` before attention (big_vision attends to
  its cache already during prefill) and returned per layer as [B, L, T, K, H].
- "extend": one new token per row; attention reads the given cache (the slots the mask allows) plus the
  token's own k/v, rounded to `cache_dtype` as if read back from the cache; each layer returns only
  that new k/v, and the caller writes all layers' in one update (model.py): the cache is never copied.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from components.paligemma import attention, precision
from components.paligemma.sharding import constrain_batch

MODES = ("forward", "prefill", "extend")


def _trunc_normal(in_axis, out_axis):
  return nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=in_axis, out_axis=out_axis,
                                          batch_axis=())


def apply_rope(x, positions, max_wavelength=10_000):
  """Rotary embedding, half-split (not interleaved): x f32[B, T, N, H], positions int[B, T]."""
  freq_exponents = (2.0 / x.shape[-1]) * jnp.arange(x.shape[-1] // 2)
  timescale = max_wavelength**freq_exponents
  radians = (positions[..., None] / timescale[None, None, :])[..., None, :]  # [B, T, 1, H/2]
  sin, cos = jnp.sin(radians), jnp.cos(radians)
  x1, x2 = jnp.split(x, 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


class Einsum(nn.Module):
  shape: tuple[int, ...]
  w_init: nn.initializers.Initializer
  dtype: str

  @nn.compact
  def __call__(self, eqn, x):
    w = self.param("w", self.w_init, self.shape)
    return precision.einsum(eqn, x.astype(self.dtype), w.astype(self.dtype))


class RMSNorm(nn.Module):
  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.initializers.zeros_init(), (x.shape[-1],))
    x = x.astype(jnp.float32)
    var = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
    return x * jnp.reciprocal(jnp.sqrt(var + 1e-6)) * (1 + scale.astype(jnp.float32))


class Embedder(nn.Module):
  vocab_size: int
  width: int
  dtype: str

  def setup(self):
    self.input_embedding = self.param(
        "input_embedding",
        nn.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=1, out_axis=0),
        (self.vocab_size, self.width))

  def encode(self, tokens):  # int[B, T] -> f32[B, T, E]
    x = self.input_embedding[(tokens,)]
    x = x * jnp.sqrt(self.width).astype(x.dtype)  # scaled in the table's dtype, as big_vision.
    return x.astype(jnp.float32)

  def decode(self, x):  # f32[B, ..., E] -> f32[B, ..., V], tied to the input embedding.
    return precision.einsum_f32("...e,ve->...v", x.astype(self.dtype), self.input_embedding.astype(self.dtype))


class Attention(nn.Module):
  num_heads: int
  num_kv_heads: int
  width: int
  head_dim: int
  query_pre_attn_norm: str
  attn_logits_softcap: float
  dtype: str
  cache_dtype: str
  attention: str

  @nn.compact
  def __call__(self, x, positions, attn_mask, cache, mode):
    n, k_heads, h, e = self.num_heads, self.num_kv_heads, self.head_dim, self.width
    if n == k_heads:
      q, k, v = Einsum((3, n, e, h), _trunc_normal((2,), (0, 1, 3)), self.dtype, name="qkv_einsum")(
          "BTE,3NEH->3BTNH", x)
    else:
      q = Einsum((n, e, h), _trunc_normal((1,), (0, 2)), self.dtype, name="q_einsum")("BTE,NEH->BTNH", x)
      k, v = Einsum((2, k_heads, e, h), _trunc_normal((2,), (0, 1, 3)), self.dtype, name="kv_einsum")(
          "BSE,2KEH->2BSKH", x)

    q = apply_rope(q.astype(jnp.float32), positions)
    if self.query_pre_attn_norm == "rsqrt_head_dim":
      q = q * h**-0.5
    elif self.query_pre_attn_norm == "rsqrt_emb_per_head":  # Gemma 2 27B.
      q = q * (e // n) ** -0.5
    else:
      raise ValueError(f"llm.query_pre_attn_norm={self.query_pre_attn_norm!r}; expected 'rsqrt_head_dim' or "
                       "'rsqrt_emb_per_head'.")
    k = apply_rope(k.astype(jnp.float32), positions)

    new_cache = None
    if mode in ("prefill", "extend"):
      new_cache = (k.astype(self.cache_dtype), v.astype(self.cache_dtype))
      k, v = new_cache
    if mode == "extend":  # one query per row: nothing to fuse
      encoded = attention.attend_cached(q, *cache, k, v, attn_mask, dtype=self.dtype,
                                        softcap=self.attn_logits_softcap)
    else:
      encoded = attention.attend(q, k, v, attn_mask, impl=self.attention, dtype=self.dtype,
                                 softcap=self.attn_logits_softcap)
    out = Einsum((n, h, e), _trunc_normal((0, 1), (2,)), self.dtype, name="attn_vec_einsum")(
        "BTNH,NHE->BTE", encoded)
    return out, new_cache


class FeedForward(nn.Module):
  width: int
  mlp_dim: int
  dtype: str

  @nn.compact
  def __call__(self, x):  # [B, T, D] -> [B, T, D]
    w_gating = self.param("gating_einsum", _trunc_normal((1,), (0, 2)), (2, self.width, self.mlp_dim))
    w_linear = self.param("linear", _trunc_normal((0,), (1,)), (self.mlp_dim, self.width))
    # The dots take rows [B*T, D]: with two leading dims, XLA:CPU writes each weight gradient's
    # [B*T, F] operand transposed, element by element, which doubles the MLP's forward+backward time on a
    # CPU. The reshape is free on every backend.
    rows = x.reshape(-1, self.width).astype(self.dtype)
    w_gating = w_gating.astype(self.dtype)
    gate = nn.gelu(precision.einsum("TD,DF->TF", rows, w_gating[0]), approximate=True)  # index 0 gate, 1 up.
    hidden = gate * precision.einsum("TD,DF->TF", rows, w_gating[1])
    return precision.einsum("TF,FD->TD", hidden, w_linear.astype(self.dtype)).reshape(x.shape)


class Block(nn.Module):
  """One decoder layer; `nn.scan` stacks it. Signature (x, cache, ...) -> (x, new_cache) as scan wants."""
  num_heads: int
  num_kv_heads: int
  width: int
  head_dim: int
  mlp_dim: int
  query_pre_attn_norm: str
  attn_logits_softcap: float
  post_norms: bool
  dropout: float
  dtype: str
  cache_dtype: str
  attention: str

  @nn.compact
  def __call__(self, x, cache, positions, attn_mask, mode, deterministic):
    x = constrain_batch(x)
    y, new_cache = Attention(self.num_heads, self.num_kv_heads, self.width, self.head_dim,
                             self.query_pre_attn_norm, self.attn_logits_softcap, self.dtype, self.cache_dtype,
                             self.attention, name="attn")(RMSNorm(name="pre_attention_norm")(x), positions, attn_mask, cache,
                                          mode)
    if self.post_norms:
      y = RMSNorm(name="post_attention_norm")(y)
    y = nn.Dropout(self.dropout)(y, deterministic=deterministic)
    x = constrain_batch(x + y.astype(jnp.float32))
    y = FeedForward(self.width, self.mlp_dim, self.dtype, name="mlp")(RMSNorm(name="pre_ffw_norm")(x))
    y = nn.Dropout(self.dropout)(y, deterministic=deterministic)
    if self.post_norms:
      y = RMSNorm(name="post_ffw_norm")(y)
    return x + y.astype(jnp.float32), new_cache


class Gemma(nn.Module):
  """Embedded sequence f32[B, T, E] -> final-norm output ("pre-logits") f32[B, T, E], plus the k/v cache."""
  vocab_size: int
  width: int
  depth: int
  mlp_dim: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  attn_logits_softcap: float = 0.0
  final_logits_softcap: float = 0.0
  post_norms: bool = False
  query_pre_attn_norm: str = "rsqrt_head_dim"
  dropout: float = 0.0
  scan: bool = True
  remat_policy: str = "nothing_saveable"
  dtype: str = "float32"
  cache_dtype: str = "bfloat16"
  attention: str = "einsum"  # an implementation name of attention.py, already chosen ("auto" resolved)

  def setup(self):
    self.embedder = Embedder(self.vocab_size, self.width, self.dtype)
    block = Block
    if self.remat_policy != "none":
      block = nn.remat(Block, prevent_cse=False, static_argnums=(5, 6),  # 0=self, 5=mode, 6=deterministic.
                       policy=precision.remat_policy(self.remat_policy))
    # scan=False unrolls the loop for XLA but keeps the stacked (checkpoint) parameter layout.
    self.layers = nn.scan(
        block, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
        in_axes=(1, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast), out_axes=1,
        length=self.depth, unroll=1 if self.scan else self.depth)(
            self.num_heads, self.num_kv_heads, self.width, self.head_dim, self.mlp_dim, self.query_pre_attn_norm,
            self.attn_logits_softcap, self.post_norms, self.dropout, self.dtype, self.cache_dtype, self.attention)
    self.final_norm = RMSNorm()

  def embed_tokens(self, tokens):  # int[B, T] -> f32[B, T, E]
    return self.embedder.encode(tokens)

  def compute_logits(self, pre_logits, *, softcap=False):
    """f32[B, ..., E] -> f32[B, ..., V]. big_vision caps logits only in its full-model call, which decoding
    uses for every token after the first; training and prefill logits are never capped."""
    logits = self.embedder.decode(pre_logits)
    if softcap and self.final_logits_softcap:
      logits = jnp.tanh(logits / self.final_logits_softcap) * self.final_logits_softcap
    return logits

  def __call__(self, x, positions, attn_mask, *, cache=None, mode="forward", deterministic=True):
    """x f32[B, T, E], positions int[B, T], attn_mask bool[B, T, S].

    cache (mode "extend" only): (k, v) each [B, L, S, K, H], attn_mask then [B, 1, S] over its slots.
    Returns (pre_logits f32[B, T, E], k/v or None): in `cache_dtype`, [B, L, T, K, H], of the prompt
    ("prefill") or of the new token ("extend", T = 1; the caller writes them into its cache).
    """
    if mode not in MODES:
      raise ValueError(f"mode={mode!r}; expected one of {MODES}.")
    x, new_cache = self.layers(x, cache, positions, attn_mask, mode, deterministic)
    return self.final_norm(x), new_cache
