"""The name and shape map between big_vision's PaliGemma tree and transformers' (PALIGEMMA.md §7).

Pure data and numpy: `entries(dims)` lists every tensor as (transformers name, big_vision path, index into
the layer-stacked big_vision array, transform); `TRANSFORMS` turn one big_vision slice into the
transformers tensor and back. hf.py does the file work.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Callable

import numpy as np

VOCAB_PAD_MULTIPLE = 64  # transformers' PaliGemma conversion pads embed_tokens (257152 + <image> -> 257216).


@dataclasses.dataclass(frozen=True)
class Dims:
  """Sizes that fix every tensor name and shape on both sides."""
  img_width: int
  img_depth: int
  img_mlp: int
  img_heads: int
  patch: int
  num_patches: int
  vocab: int  # our vocabulary V (rows of llm/embedder/input_embedding), without <image>.
  width: int
  depth: int
  mlp: int
  heads: int
  kv_heads: int
  head_dim: int
  post_norms: bool

  @property
  def img_head_dim(self) -> int:
    return self.img_width // self.img_heads


@dataclasses.dataclass(frozen=True)
class Entry:
  hf: str  # canonical transformers name (see `canonical_name`)
  bv: str  # "/"-joined big_vision path
  index: tuple[int, ...]  # leading indices into the stacked big_vision array (layer, then q/k/v or gate/up)
  kind: str  # a key of TRANSFORMS


def padded_vocab(vocab: int) -> int:
  """Rows of transformers' embed_tokens for our vocab V: V + 1 (`<image>`), rounded up to 64."""
  return -(-(vocab + 1) // VOCAB_PAD_MULTIPLE) * VOCAB_PAD_MULTIPLE


@dataclasses.dataclass(frozen=True)
class Transform:
  to_hf: Callable[[np.ndarray], np.ndarray]  # big_vision slice x -> transformers tensor
  from_hf: Callable[[np.ndarray, tuple], np.ndarray]  # (transformers tensor y, big_vision slice shape s) -> x
  hf_shape: Callable[[tuple], tuple]  # big_vision slice shape s -> transformers shape


def _pad_rows(x):
  return np.concatenate([x, np.zeros((padded_vocab(x.shape[0]) - x.shape[0], x.shape[1]), x.dtype)])


TRANSFORMS = {
    "copy": Transform(lambda x: x, lambda y, s: y.reshape(s), lambda s: s),
    "T": Transform(lambda x: x.T, lambda y, s: y.T, lambda s: s[::-1]),
    # Patch conv HWIO -> OIHW.
    "conv": Transform(lambda x: x.transpose(3, 2, 0, 1), lambda y, s: y.transpose(2, 3, 1, 0),
                      lambda s: (s[3], s[2], s[0], s[1])),
    # Position embedding [1, N, D] -> [N, D].
    "pos": Transform(lambda x: x[0], lambda y, s: y.reshape(s), lambda s: s[1:]),
    # SigLIP attention biases [h, d] -> [h*d].
    "flat": Transform(lambda x: x.reshape(-1), lambda y, s: y.reshape(s), lambda s: (int(np.prod(s)),)),
    # SigLIP q/k/v kernels [D, h, d] -> [h*d, D]; out kernel [h, d, D] -> [D, h*d].
    "heads_in": Transform(lambda x: x.reshape(x.shape[0], -1).T, lambda y, s: y.T.reshape(s),
                          lambda s: (s[1] * s[2], s[0])),
    "heads_out": Transform(lambda x: x.reshape(-1, x.shape[-1]).T, lambda y, s: y.T.reshape(s),
                           lambda s: (s[2], s[0] * s[1])),
    # Gemma q/k/v einsums [N, W, H] -> [N*H, W]; attn_vec_einsum [N, H, W] -> [W, N*H].
    "einsum_in": Transform(lambda x: x.transpose(0, 2, 1).reshape(-1, x.shape[1]),
                           lambda y, s: y.reshape(s[0], s[2], s[1]).transpose(0, 2, 1),
                           lambda s: (s[0] * s[2], s[1])),
    "einsum_out": Transform(lambda x: x.transpose(2, 0, 1).reshape(x.shape[2], -1),
                            lambda y, s: y.reshape(s[2], s[0], s[1]).transpose(1, 2, 0),
                            lambda s: (s[2], s[0] * s[1])),
    # Token embedding [V, W] -> [padded_vocab(V), W]: zero rows for <image> and transformers' padding.
    "embed": Transform(_pad_rows, lambda y, s: y[:s[0]], lambda s: (padded_vocab(s[0]), s[1])),
}


def entries(d: Dims) -> list[Entry]:
  """Every tensor of the model, in file order: (transformers name, big_vision path, index, transform)."""
  e = []
  img, enc = "vision_tower.", "img/Transformer/encoderblock/"
  e += [Entry(img + "embeddings.patch_embedding.weight", "img/embedding/kernel", (), "conv"),
        Entry(img + "embeddings.patch_embedding.bias", "img/embedding/bias", (), "copy"),
        Entry(img + "embeddings.position_embedding.weight", "img/pos_embedding", (), "pos")]
  for i in range(d.img_depth):
    hf = f"{img}encoder.layers.{i}."
    for ln, bv in (("layer_norm1", "LayerNorm_0"), ("layer_norm2", "LayerNorm_1")):
      e += [Entry(f"{hf}{ln}.weight", f"{enc}{bv}/scale", (i,), "copy"),
            Entry(f"{hf}{ln}.bias", f"{enc}{bv}/bias", (i,), "copy")]
    for fc, bv in (("fc1", "Dense_0"), ("fc2", "Dense_1")):
      e += [Entry(f"{hf}mlp.{fc}.weight", f"{enc}MlpBlock_0/{bv}/kernel", (i,), "T"),
            Entry(f"{hf}mlp.{fc}.bias", f"{enc}MlpBlock_0/{bv}/bias", (i,), "copy")]
    mha = f"{enc}MultiHeadDotProductAttention_0/"
    for proj, bv in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
      e += [Entry(f"{hf}self_attn.{proj}.weight", f"{mha}{bv}/kernel", (i,), "heads_in"),
            Entry(f"{hf}self_attn.{proj}.bias", f"{mha}{bv}/bias", (i,), "flat")]
    e += [Entry(f"{hf}self_attn.out_proj.weight", f"{mha}out/kernel", (i,), "heads_out"),
          Entry(f"{hf}self_attn.out_proj.bias", f"{mha}out/bias", (i,), "copy")]
  e += [Entry(img + "post_layernorm.weight", "img/Transformer/encoder_norm/scale", (), "copy"),
        Entry(img + "post_layernorm.bias", "img/Transformer/encoder_norm/bias", (), "copy"),
        Entry("multi_modal_projector.linear.weight", "img/head/kernel", (), "T"),
        Entry("multi_modal_projector.linear.bias", "img/head/bias", (), "copy")]

  e.append(Entry("language_model.embed_tokens.weight", "llm/embedder/input_embedding", (), "embed"))
  lay = "llm/layers/"
  for i in range(d.depth):
    hf = f"language_model.layers.{i}."
    if d.kv_heads == d.heads:  # MHA: big_vision stores one qkv_einsum [3, N, W, H].
      q, k, v = [(f"{lay}attn/qkv_einsum/w", (i, j)) for j in range(3)]
    else:  # MQA / GQA: q_einsum [N, W, H] and kv_einsum [2, K, W, H].
      q, k, v = (f"{lay}attn/q_einsum/w", (i,)), (f"{lay}attn/kv_einsum/w", (i, 0)), (f"{lay}attn/kv_einsum/w", (i, 1))
    e += [Entry(f"{hf}self_attn.{name}.weight", bv, index, "einsum_in")
          for name, (bv, index) in (("q_proj", q), ("k_proj", k), ("v_proj", v))]
    e += [Entry(f"{hf}self_attn.o_proj.weight", f"{lay}attn/attn_vec_einsum/w", (i,), "einsum_out"),
          Entry(f"{hf}mlp.gate_proj.weight", f"{lay}mlp/gating_einsum", (i, 0), "T"),
          Entry(f"{hf}mlp.up_proj.weight", f"{lay}mlp/gating_einsum", (i, 1), "T"),
          Entry(f"{hf}mlp.down_proj.weight", f"{lay}mlp/linear", (i,), "T"),
          Entry(f"{hf}input_layernorm.weight", f"{lay}pre_attention_norm/scale", (i,), "copy")]
    if d.post_norms:
      norms = (("post_attention_layernorm", "post_attention_norm"), ("pre_feedforward_layernorm", "pre_ffw_norm"),
               ("post_feedforward_layernorm", "post_ffw_norm"))
    else:  # Gemma 1 calls the pre-MLP norm "post_attention_layernorm".
      norms = (("post_attention_layernorm", "pre_ffw_norm"),)
    e += [Entry(f"{hf}{name}.weight", f"{lay}{bv}/scale", (i,), "copy") for name, bv in norms]
  e.append(Entry("language_model.norm.weight", "llm/final_norm/scale", (), "copy"))
  return e


def bv_shapes(d: Dims) -> dict[str, tuple[int, ...]]:
  """Full shape of every big_vision array (layers stacked on axis 0)."""
  W, L, N, K, H, F = d.width, d.depth, d.heads, d.kv_heads, d.head_dim, d.mlp
  iw, il, ih, ihd = d.img_width, d.img_depth, d.img_heads, d.img_head_dim
  enc, mha = "img/Transformer/encoderblock/", "img/Transformer/encoderblock/MultiHeadDotProductAttention_0/"
  s = {"img/embedding/kernel": (d.patch, d.patch, 3, iw), "img/embedding/bias": (iw,),
       "img/pos_embedding": (1, d.num_patches, iw),
       "img/Transformer/encoder_norm/scale": (iw,), "img/Transformer/encoder_norm/bias": (iw,),
       "img/head/kernel": (iw, W), "img/head/bias": (W,),
       enc + "MlpBlock_0/Dense_0/kernel": (il, iw, d.img_mlp), enc + "MlpBlock_0/Dense_0/bias": (il, d.img_mlp),
       enc + "MlpBlock_0/Dense_1/kernel": (il, d.img_mlp, iw), enc + "MlpBlock_0/Dense_1/bias": (il, iw),
       mha + "out/kernel": (il, ih, ihd, iw), mha + "out/bias": (il, iw),
       "llm/embedder/input_embedding": (d.vocab, W), "llm/final_norm/scale": (W,),
       "llm/layers/attn/attn_vec_einsum/w": (L, N, H, W),
       "llm/layers/mlp/gating_einsum": (L, 2, W, F), "llm/layers/mlp/linear": (L, F, W)}
  for ln in ("LayerNorm_0", "LayerNorm_1"):
    s[f"{enc}{ln}/scale"] = s[f"{enc}{ln}/bias"] = (il, iw)
  for qkv in ("query", "key", "value"):
    s[f"{mha}{qkv}/kernel"], s[f"{mha}{qkv}/bias"] = (il, iw, ih, ihd), (il, ih, ihd)
  if K == N:
    s["llm/layers/attn/qkv_einsum/w"] = (L, 3, N, W, H)
  else:
    s["llm/layers/attn/q_einsum/w"], s["llm/layers/attn/kv_einsum/w"] = (L, N, W, H), (L, 2, K, W, H)
  norms = ("pre_attention_norm", "pre_ffw_norm") + (("post_attention_norm", "post_ffw_norm") if d.post_norms else ())
  for norm in norms:
    s[f"llm/layers/{norm}/scale"] = (L, W)
  return s


def canonical_name(name: str) -> str:
  """One name for a tensor whichever transformers version wrote it (see the module docstring)."""
  name = re.sub(r"^model\.", "", name)
  name = re.sub(r"^language_model\.model\.", "language_model.", name)
  return re.sub(r"^vision_tower\.vision_model\.", "vision_tower.", name)


def serialized_name(canonical: str) -> str:
  """The released checkpoints' name, loadable by every transformers version."""
  name = re.sub(r"^language_model\.", "language_model.model.", canonical)
  return re.sub(r"^vision_tower\.", "vision_tower.vision_model.", name)


def dims_from_params(flat: dict) -> Dims:
  """Reads every size from a flat big_vision tree (`flatten_params`), so names and shapes follow the data."""
  return dims_from_shapes({name: tuple(value.shape) for name, value in flat.items()})


def dims_from_shapes(shapes: dict[str, tuple[int, ...]]) -> Dims:
  """Every size from the shapes of a flat big_vision tree (flat name -> shape); a missing array is an error."""
  def shape(name, ndim):
    if name not in shapes:
      raise ValueError(f"parameter {name!r} is missing; expected a PaliGemma tree as `components.paligemma.load` "
                       "returns it")
    if len(shapes[name]) != ndim:
      raise ValueError(f"parameter {name!r} has shape {tuple(shapes[name])}; a PaliGemma tree has {ndim} axes there")
    return tuple(shapes[name])

  mha = "img/Transformer/encoderblock/MultiHeadDotProductAttention_0/"
  patch, _, _, img_width = shape("img/embedding/kernel", 4)
  img_depth, _, img_heads, _ = shape(mha + "query/kernel", 4)
  vocab, width = shape("llm/embedder/input_embedding", 2)
  if "llm/layers/attn/qkv_einsum/w" in shapes:
    depth, _, heads, _, head_dim = shape("llm/layers/attn/qkv_einsum/w", 5)
    kv_heads = heads
  else:
    depth, heads, _, head_dim = shape("llm/layers/attn/q_einsum/w", 4)
    kv_heads = shape("llm/layers/attn/kv_einsum/w", 5)[2]
  return Dims(img_width=img_width, img_depth=img_depth,
              img_mlp=shape("img/Transformer/encoderblock/MlpBlock_0/Dense_0/kernel", 3)[-1], img_heads=img_heads,
              patch=patch, num_patches=shape("img/pos_embedding", 3)[1], vocab=vocab, width=width, depth=depth,
              mlp=shape("llm/layers/mlp/gating_einsum", 4)[-1], heads=heads, kv_heads=kv_heads, head_dim=head_dim,
              post_norms="llm/layers/post_attention_norm/scale" in shapes)
