"""SigLIP image tower as PaliGemma uses it: a ViT with learned position embedding, no pooling, and a
linear `head` that projects every patch token to the LLM width. Parameter names are big_vision's
(`img/embedding`, `img/pos_embedding`, `img/Transformer/encoderblock/...` stacked on a leading depth
axis, `img/Transformer/encoder_norm`, `img/head`).

Axes: B batch, H/W image height/width, P patch size, N patch tokens, D tower width, E LLM width.

`dtype` is the matmul dtype (weights are cast to it in each layer; layer norms, softmax and the residual
stream stay f32); `attention` the attention implementation (attention.py, already resolved from "auto").
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from components.paligemma import attention as attention_lib, precision
from components.paligemma.sharding import constrain_batch


def _attention_fn(impl: str, dtype: str):
  """flax's `attention_fn` hook (it passes only the arguments named here): q/k/v [B, N, heads, head dim]."""

  def attend(query, key, value, mask=None):
    del mask  # every patch attends to every patch
    return attention_lib.attend(query, key, value, None, impl=impl, dtype=dtype, scale=query.shape[-1] ** -0.5)

  return attend


class MlpBlock(nn.Module):
  mlp_dim: int
  dtype: str

  @nn.compact
  def __call__(self, x):  # [B, N, D] -> [B, N, D]
    dense = dict(dtype=self.dtype, dot_general=precision.dot_general, kernel_init=nn.initializers.xavier_uniform(),
                 bias_init=nn.initializers.normal(stddev=1e-6))
    width = x.shape[-1]
    x = nn.Dense(self.mlp_dim, **dense)(x)
    x = nn.gelu(x, approximate=True)
    return nn.Dense(width, **dense)(x)


class EncoderBlock(nn.Module):
  """Pre-LN transformer block; called through `nn.scan`, hence the unused carry-style second argument."""
  mlp_dim: int
  num_heads: int
  dtype: str
  attention: str

  @nn.compact
  def __call__(self, x, _):  # [B, N, D]
    x = constrain_batch(x)
    y = nn.LayerNorm(epsilon=1e-6, dtype=jnp.float32)(x)
    y = nn.MultiHeadDotProductAttention(num_heads=self.num_heads, dtype=self.dtype,
                                        qkv_dot_general=precision.dot_general, out_dot_general=precision.dot_general,
                                        kernel_init=nn.initializers.xavier_uniform(),
                                        attention_fn=_attention_fn(self.attention, self.dtype))(y, y)
    x = x + y.astype(jnp.float32)
    y = nn.LayerNorm(epsilon=1e-6, dtype=jnp.float32)(x)
    y = MlpBlock(self.mlp_dim, self.dtype)(y)
    return x + y.astype(jnp.float32), None


class Encoder(nn.Module):
  depth: int
  mlp_dim: int
  num_heads: int
  scan: bool
  remat_policy: str
  dtype: str
  attention: str

  @nn.compact
  def __call__(self, x):  # [B, N, D]
    block = EncoderBlock
    if self.remat_policy != "none":
      block = nn.remat(block, prevent_cse=False, policy=precision.remat_policy(self.remat_policy))
    # scan=False unrolls the loop for XLA but keeps the stacked (checkpoint) parameter layout.
    x, _ = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=nn.broadcast,
                   length=self.depth, unroll=1 if self.scan else self.depth)(
                       mlp_dim=self.mlp_dim, num_heads=self.num_heads, dtype=self.dtype, attention=self.attention,
                       name="encoderblock")(x, None)
    return nn.LayerNorm(epsilon=1e-6, dtype=jnp.float32, name="encoder_norm")(x)


class SigLIP(nn.Module):
  """image f32[B, H, W, 3] in [-1, 1] -> image tokens f32[B, N, E] (E = `out_dim`, the LLM width)."""
  out_dim: int
  width: int
  depth: int
  mlp_dim: int
  num_heads: int
  patch_size: int
  image_size: int
  scan: bool = True
  remat_policy: str = "nothing_saveable"
  dtype: str = "float32"
  attention: str = "einsum"  # an implementation name of attention.py, already chosen ("auto" resolved)
  variant: str = "So400m/14"

  @nn.compact
  def __call__(self, image):
    p = self.patch_size
    if image.shape[1:] != (self.image_size, self.image_size, 3):
      raise ValueError(f"image has shape {image.shape}; this model expects [B, {self.image_size}, "
                       f"{self.image_size}, 3] (img.image_size={self.image_size}).")
    x = nn.Conv(self.width, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype, name="embedding")(
        jnp.asarray(image, self.dtype))
    b, h, w, d = x.shape
    x = x.reshape(b, h * w, d).astype(jnp.float32)
    posemb = self.param("pos_embedding", nn.initializers.normal(stddev=1 / self.width**0.5), (1, h * w, d))
    x = x + posemb.astype(jnp.float32)
    x = Encoder(self.depth, self.mlp_dim, self.num_heads, self.scan, self.remat_policy, self.dtype, self.attention,
                name="Transformer")(x)
    return nn.Dense(self.out_dim, dtype=self.dtype, dot_general=precision.dot_general, name="head")(x).astype(
        jnp.float32)
