"""PaliGemma: SigLIP image tokens, then text tokens, through Gemma with a prefix-LM attention mask.

    model = Model(**model_cfg)            # model_cfg = {"llm": {"variant": ...}, "img": {"variant": ...}}
    text_logits, aux = model.apply({"params": params}, image, text, mask_ar, train=False)

Axes: B batch, N image tokens, T text tokens, L layers, S cache length, K kv heads, H head dim, E LLM
width, V vocab.

Decoding (see decode.py) uses two more methods and an explicit cache, a dict of arrays with the batch
first so that it shards like the batch and can be reordered (beam search) with one gather:
    logits, cache = model.apply(v, image, text, mask_input, mask_ar, cache_size=S, method=model.prefill)
    logits, cache = model.apply(v, tokens, cache, method=model.extend)
cache = {"k", "v": [B, L, S, K, H] in llm.cache_dtype, "begin": int[B] first used slot,
         "end": int[B] next slot to write (equal for all rows), "pos": int[B] position of the next token}.
Prompts are right-aligned inside the cache (padding first) so every row writes the same slot, as in
big_vision. `prefill` returns the logits of the last prompt token; `extend` those of the given token.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from components.paligemma import configs
from components.paligemma.gemma import Gemma
from components.paligemma.siglip import SigLIP


def make_attn_mask(input_mask, mask_ar):
  """bool[B, S, S]: token i attends to j iff cumsum(mask_ar)[j] <= cumsum(mask_ar)[i], both real tokens."""
  cumsum = jnp.cumsum(mask_ar, axis=1)
  attn_mask = cumsum[:, None, :] <= cumsum[:, :, None]
  valid = jnp.logical_and(input_mask[:, None, :], input_mask[:, :, None])
  return jnp.logical_and(attn_mask, valid)


@jax.vmap
def _right_align(x, input_mask, attn_mask):
  """Moves each row's padding (after its real tokens) to the front: x [S, E], input_mask [S], attn_mask [S, S]."""
  shift = -jnp.sum(input_mask)
  return jnp.roll(x, shift, axis=0), jnp.roll(input_mask, shift, axis=0), jnp.roll(attn_mask, shift, axis=(0, 1))


def _tower_kwargs(cfg):
  return {k: v for k, v in cfg.items() if k != "variant"}


class Model(nn.Module):
  """PaliGemma. `llm` and `img` are the two halves of a `model_cfg` (see configs.py)."""
  llm: dict
  img: dict

  def setup(self):
    # "auto" attention is chosen for the default backend here; the trainer and the planner choose it for
    # their mesh's devices before building the model (a TPU plan is traced on a CPU host).
    chosen = configs.choose_attention({"llm": self.llm, "img": self.img}, jax.default_backend(),
                                      jax.devices()[0].device_kind)
    llm_cfg = configs.resolve_llm(chosen["llm"])
    self._llm = Gemma(**_tower_kwargs(llm_cfg), name="llm")
    self._img = SigLIP(out_dim=llm_cfg["width"], **_tower_kwargs(configs.resolve_img(chosen["img"])), name="img")

  def embed_image(self, image, train=False):
    """image f32[B, H, W, 3] in [-1, 1] -> (image tokens f32[B, N, E], {"img/zimg": ...})."""
    del train  # the image tower has no dropout.
    zimg = self._img(image)
    return zimg, {"img/zimg": zimg}

  def embed_text(self, tokens, train=False):
    """int[B, T] -> f32[B, T, E] (embedding × sqrt(E))."""
    del train
    return self._llm.embed_tokens(tokens)

  def embed_image_and_text(self, image, text, *, input_mask=None, mask_ar=None, train=False):
    """Returns ((x f32[B, N+T, E], input_mask bool[B, N+T], mask_ar int[B, N+T]), aux)."""
    zimg, aux = self.embed_image(image, train=train)
    ztxt = self.embed_text(text, train=train)
    input_mask = jnp.ones(text.shape, bool) if input_mask is None else jnp.asarray(input_mask, bool)
    mask_ar = jnp.ones(text.shape, jnp.int32) if mask_ar is None else jnp.asarray(mask_ar, jnp.int32)
    pad = ((0, 0), (zimg.shape[1], 0))  # image tokens: real, full attention among themselves.
    x = jnp.concatenate([zimg, ztxt], axis=1)
    return (x, jnp.pad(input_mask, pad, constant_values=True), jnp.pad(mask_ar, pad)), aux

  def __call__(self, image, text, mask_ar, train=False):
    """image f32[B, H, W, 3], text int[B, T], mask_ar int[B, T] -> (text_logits f32[B, T, V], aux).

    aux: "img/zimg" [B, N, E], "llm/pre_logits" [B, N+T, E], "attn_mask" bool[B, N+T, N+T].
    Logits are not soft-capped (as big_vision, for training and scoring).
    """
    (x, input_mask, mask_ar), aux = self.embed_image_and_text(image, text, mask_ar=mask_ar, train=train)
    attn_mask = aux["attn_mask"] = make_attn_mask(input_mask, mask_ar)
    positions = jnp.broadcast_to(jnp.arange(x.shape[1]), x.shape[:2])
    pre_logits, _ = self._llm(x, positions, attn_mask, deterministic=not train)
    aux["llm/pre_logits"] = pre_logits
    text_logits = self._llm.compute_logits(pre_logits[:, aux["img/zimg"].shape[1]:])
    return text_logits, aux

  def prefill(self, image, text, mask_input, mask_ar, *, cache_size):
    """Runs image + prompt (right-padded, `mask_input` 1 on real tokens) into a fresh cache of `cache_size`
    slots. Returns (logits f32[B, V] of each row's last prompt token, cache)."""
    (x, input_mask, mask_ar), _ = self.embed_image_and_text(image, text, input_mask=mask_input, mask_ar=mask_ar)
    x, input_mask, attn_mask = _right_align(x, input_mask, make_attn_mask(input_mask, mask_ar))
    batch, prefill_len, _ = x.shape
    if cache_size < prefill_len:
      raise ValueError(f"cache_size={cache_size} is smaller than the prompt ({prefill_len} image+text tokens).")
    seq_len = jnp.sum(input_mask, axis=1).astype(jnp.int32)
    positions = jnp.cumsum(input_mask, axis=1) - 1
    pre_logits, (k, v) = self._llm(x, positions, attn_mask, mode="prefill")
    pad = ((0, 0), (0, 0), (0, cache_size - prefill_len), (0, 0), (0, 0))
    cache = {"k": jnp.pad(k, pad), "v": jnp.pad(v, pad), "begin": prefill_len - seq_len,
             "end": jnp.full((batch,), prefill_len, jnp.int32), "pos": seq_len}
    return self._llm.compute_logits(pre_logits[:, -1]), cache

  def extend(self, tokens, cache):
    """Feeds one token per row (int[B]) at the cache's next slot. Returns (logits f32[B, V], cache).
    These logits carry the final soft-cap when the model has one, exactly as big_vision's decoding."""
    x = self._llm.embed_tokens(tokens[:, None])
    slots = jnp.arange(cache["k"].shape[2])[None, None, :]
    attn_mask = (slots >= cache["begin"][:, None, None]) & (slots < cache["end"][:, None, None])  # [B, 1, S]
    pre_logits, (k, v) = self._llm(x, cache["pos"][:, None], attn_mask, cache=(cache["k"], cache["v"]),
                                   mode="extend")
    # Every layer's new k/v [B, L, 1, K, H] into slot `end` (the same for every row: prompts are
    # right-aligned): one in-place update of the cache per token.
    slot = (0, 0, cache["end"][0], 0, 0)
    k, v = (jax.lax.dynamic_update_slice(cache[name], new, slot) for name, new in (("k", k), ("v", v)))
    cache = {"k": k, "v": v, "begin": cache["begin"], "end": cache["end"] + 1, "pos": cache["pos"] + 1}
    return self._llm.compute_logits(pre_logits[:, 0], softcap=True), cache


def init_params(model_cfg: dict, rng) -> dict:
  """A freshly initialised model's weights (f32), seeded by `rng`: the trainer's random init, which a finetune
  workdir's reader repeats to recover the frozen weights of a run that started from it."""
  size = configs.image_size(model_cfg)
  image, text = jnp.zeros((1, size, size, 3), jnp.float32), jnp.zeros((1, 2), jnp.int32)
  return Model(**model_cfg).init(rng, image, text, text)["params"]
