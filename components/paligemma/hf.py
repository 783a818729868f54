"""Conversion between our big_vision parameter tree and transformers' `PaliGemmaForConditionalGeneration`.

    to_hf(params, model_cfg, out_dir)        # config.json, generation_config.json, safetensors
    params, model_cfg = from_hf(path)        # a local directory, or hf://org/repo in the local hub cache

Neither needs torch nor transformers. Names and transforms live in `_hf_layout` (PALIGEMMA.md §7), the
streaming safetensors writer in `_safetensors_io`.
Tensors are written under the released hub checkpoints' names (`vision_tower.vision_model.*`,
`language_model.model.*`, `multi_modal_projector.*`), which every transformers version loads; `from_hf`
also reads the renamed layouts of transformers >= 4.52 (`model.language_model.*`) and 5.x
(`vision_tower.encoder.*`), any float dtype (kept as stored), and sharded or single-file weights.

Where transformers computes differently, the exported config makes it compute what our `Model` does:
- `<image>` is one more token (id = our vocab size V) and transformers pads `embed_tokens` to a multiple
  of 64 rows. The extra rows are zeros and `generation_config.json` suppresses their ids, so generation
  never picks them; `from_hf` keeps the first V rows (V = `image_token_index`).
- Gemma 2 in transformers alternates sliding-window (4096) and global layers; big_vision attends globally
  in every layer, so every layer is exported as `full_attention` (identical up to 4096 tokens, and what the
  model was trained with beyond).
- Final logit softcap: big_vision caps no training or prefill logits (only the logits of decoding steps
  after the first), while transformers caps every logit when `final_logit_softcapping` is set. The
  exported text config sets it to null, so transformers' logits equal `Model.apply`'s exactly and greedy
  generation is the same (a softcap never changes the argmax); our value travels in the top-level key
  `big_vision_final_logits_softcap`, which `from_hf` reads back when the text config has none. A foreign
  checkpoint's `final_logit_softcapping` (30 for the released PaliGemma 2) becomes
  `llm.final_logits_softcap`.
- Text embeddings are scaled by sqrt(width) and image tokens are not (as big_vision); queries are scaled
  by `query_pre_attn_scalar**-0.5` = head_dim, or width/heads for `query_pre_attn_norm="rsqrt_emb_per_head"`.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import re
from typing import Any, Mapping

import ml_dtypes
import numpy as np
from safetensors import safe_open

from components.common.atomic import write_json_atomic
from components.paligemma import configs
from components.paligemma import _hf_layout as layout
from components.paligemma import _safetensors_io as safetensors_io
from components.paligemma.checkpoint import flatten_params, unflatten_params

log = logging.getLogger(__name__)

MAX_SHARD_BYTES = 5 * 1024**3  # transformers' default shard size.
ROPE_THETA = 10_000.0
_SOFTCAP_KEY = "big_vision_final_logits_softcap"


# ----------------------------------------------------------------------------------------------- to_hf
def to_hf(params: Mapping[str, Any], model_cfg: Mapping[str, Any], out_dir: str | os.PathLike, *,
          max_shard_bytes: int = MAX_SHARD_BYTES) -> str:
  """Writes a transformers PaliGemma checkpoint of `params` (nested or flat, numpy or jax) to `out_dir`.

  Weights keep each parameter's dtype; they are converted and written one tensor at a time, straight into
  safetensors files of at most `max_shard_bytes` (more files and an index above that), so no second copy
  of the model is ever held. Returns `out_dir`.
  """
  flat = flatten_params(params)
  dims = layout.dims_from_params(flat)
  llm, img = configs.resolve_llm(model_cfg["llm"]), configs.resolve_img(model_cfg["img"])
  _check_params(flat, dims, llm, img)
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  dtype = np.dtype(flat["llm/embedder/input_embedding"].dtype)
  _write_weights(out_dir, flat, dims, max_shard_bytes)
  write_json_atomic(out_dir / "config.json", _hf_config(dims, llm, img, dtype))
  write_json_atomic(out_dir / "generation_config.json", {
      "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0,
      "suppress_tokens": list(range(dims.vocab, layout.padded_vocab(dims.vocab)))})
  return str(out_dir)


def _check_params(flat, dims, llm, img) -> None:
  """The tree must be exactly the model `model_cfg` describes: every array, right shape, nothing extra."""
  expected = layout.bv_shapes(dims)
  missing, extra = sorted(set(expected) - set(flat)), sorted(set(flat) - set(expected))
  if missing or extra:
    raise ValueError(f"params do not form a PaliGemma tree: missing {missing}, unexpected {extra}")
  for name, shape in expected.items():
    if tuple(flat[name].shape) != shape:
      raise ValueError(f"parameter {name!r} has shape {tuple(flat[name].shape)}, expected {shape} "
                       "(from the other arrays' sizes)")
  got = {"llm.vocab_size": dims.vocab, "llm.width": dims.width, "llm.depth": dims.depth, "llm.mlp_dim": dims.mlp,
         "llm.num_heads": dims.heads, "llm.num_kv_heads": dims.kv_heads, "llm.head_dim": dims.head_dim,
         "llm.post_norms": dims.post_norms, "img.width": dims.img_width, "img.depth": dims.img_depth,
         "img.mlp_dim": dims.img_mlp, "img.num_heads": dims.img_heads, "img.patch_size": dims.patch,
         "img.image_size": _image_size(dims)}
  cfg = {f"llm.{k}": v for k, v in llm.items()} | {f"img.{k}": v for k, v in img.items()}
  wrong = {k: (v, cfg[k]) for k, v in got.items() if cfg[k] != v}
  if wrong:
    raise ValueError("params do not match model_cfg (field: params, model_cfg): "
                     + ", ".join(f"{k}: {a}, {b}" for k, (a, b) in wrong.items()))
  if not dims.post_norms and (llm["attn_logits_softcap"] or llm["query_pre_attn_norm"] != "rsqrt_head_dim"):
    raise ValueError("transformers' Gemma 1 has no attention softcap nor query_pre_attn_norm="
                     f"{llm['query_pre_attn_norm']!r}; this model_cfg cannot be exported to transformers")


def _image_size(dims: layout.Dims) -> int:
  return int(round(dims.num_patches**0.5)) * dims.patch


def _hf_config(dims: layout.Dims, llm: dict, img: dict, dtype: np.dtype) -> dict:
  v2 = dims.post_norms
  dtype_name = "bfloat16" if dtype == np.dtype(ml_dtypes.bfloat16) else dtype.name
  common = {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2, "tie_word_embeddings": True}
  text = {
      "model_type": "gemma2" if v2 else "gemma", "vocab_size": layout.padded_vocab(dims.vocab),
      "hidden_size": dims.width, "intermediate_size": dims.mlp, "num_hidden_layers": dims.depth,
      "num_attention_heads": dims.heads, "num_key_value_heads": dims.kv_heads, "head_dim": dims.head_dim,
      # `hidden_activation` is what transformers 4.x Gemma reads, `hidden_act` what 5.x reads.
      "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh", "rms_norm_eps": 1e-6,
      "rope_theta": ROPE_THETA, "rope_parameters": {"rope_type": "default", "rope_theta": ROPE_THETA},
      "max_position_embeddings": 8192, "attention_bias": False, "attention_dropout": 0.0,
      "num_image_tokens": dims.num_patches, "dtype": dtype_name, **common}
  if v2:
    text |= {
        "query_pre_attn_scalar": dims.head_dim if llm["query_pre_attn_norm"] == "rsqrt_head_dim"
                                 else dims.width // dims.heads,
        "attn_logit_softcapping": float(llm["attn_logits_softcap"]) or None,
        "final_logit_softcapping": None,  # see the module docstring
        "sliding_window": 4096, "layer_types": ["full_attention"] * dims.depth}
  vision = {
      "model_type": "siglip_vision_model", "hidden_size": dims.img_width, "intermediate_size": dims.img_mlp,
      "num_hidden_layers": dims.img_depth, "num_attention_heads": dims.img_heads, "num_channels": 3,
      "patch_size": dims.patch, "image_size": img["image_size"], "hidden_act": "gelu_pytorch_tanh",
      "layer_norm_eps": 1e-6, "attention_dropout": 0.0, "vision_use_head": False,
      "projection_dim": dims.width, "num_image_tokens": dims.num_patches}
  return {"architectures": ["PaliGemmaForConditionalGeneration"], "model_type": "paligemma",
          "image_token_index": dims.vocab, "vocab_size": dims.vocab, "projection_dim": dims.width,
          "hidden_size": dims.width, "dtype": dtype_name, _SOFTCAP_KEY: float(llm["final_logits_softcap"]),
          "text_config": text, "vision_config": vision, **common}


def _write_weights(out_dir: pathlib.Path, flat: dict, dims: layout.Dims, max_shard_bytes: int) -> None:
  """Plans shards from shapes alone, then writes each tensor as it is converted."""
  shards, size = [[]], 0
  for e in layout.entries(dims):
    leaf = flat[e.bv]
    dtype = np.dtype(leaf.dtype)
    if dtype not in safetensors_io.DTYPES:
      raise ValueError(f"parameter {e.bv!r} has dtype {dtype}; expected float32, bfloat16 or float16")
    shape = tuple(layout.TRANSFORMS[e.kind].hf_shape(tuple(leaf.shape[len(e.index):])))
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if shards[-1] and size + nbytes > max_shard_bytes:
      shards.append([])
      size = 0
    # `leaf[index]` slices before the host copy, so a jax array brings one layer at a time to host.
    produce = (lambda leaf=leaf, e=e: layout.TRANSFORMS[e.kind].to_hf(np.asarray(leaf[e.index])))
    shards[-1].append((layout.serialized_name(e.hf), dtype, shape, produce))
    size += nbytes
  total = sum(int(np.prod(s)) * d.itemsize for shard in shards for _, d, s, _ in shard)
  for stale in sorted(out_dir.glob("model*.safetensors*")):  # a previous export's weights would be read instead
    log.info("removing %s from an earlier export", stale)
    stale.unlink()
  progress = safetensors_io.Progress(total)
  if len(shards) == 1:
    safetensors_io.write(out_dir / "model.safetensors", shards[0], progress)
    return
  weight_map = {}
  for i, shard in enumerate(shards):
    name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
    safetensors_io.write(out_dir / name, shard, progress)
    weight_map |= {tensor: name for tensor, *_ in shard}
  write_json_atomic(out_dir / "model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map})


# --------------------------------------------------------------------------------------------- from_hf
def from_hf(path: str | os.PathLike) -> tuple[dict, dict]:
  """Reads a transformers PaliGemma (1 or 2) checkpoint into `(params, model_cfg)`.

  `path` is a directory with `config.json` and safetensors weights, or `hf://org/repo[@revision]`
  already in the local Hugging Face cache (`components.download` puts it there). Arrays keep their stored
  dtype and are read one at a time; the embedding rows transformers added for `<image>` are dropped.
  """
  directory = _local_dir(str(path))
  config_path = directory / "config.json"
  if not config_path.is_file():
    raise FileNotFoundError(f"{config_path} not found: a transformers checkpoint directory has config.json "
                            "beside its safetensors files")
  config = json.loads(config_path.read_text())
  with contextlib.ExitStack() as stack:
    tensors = _open_tensors(directory, stack)
    dims, model_cfg = _dims_and_cfg(config, tensors, config_path)
    shapes, flat, used = layout.bv_shapes(dims), {}, set()
    progress = safetensors_io.Progress(sum(f.stat().st_size for f in _files(directory)), verb="read")
    for e in layout.entries(dims):
      if e.hf not in tensors:
        raise ValueError(f"{directory}: tensor {layout.serialized_name(e.hf)!r} is missing (needed for {e.bv})")
      handle, stored = tensors[e.hf]
      y = handle.get_tensor(stored)
      s = shapes[e.bv][len(e.index):]
      want = tuple(layout.TRANSFORMS[e.kind].hf_shape(s))
      if e.kind == "embed":  # any number of rows >= V: transformers' padding is not ours to check
        want = (y.shape[0], want[1])
      if tuple(y.shape) != want:
        raise ValueError(f"{directory}: tensor {stored!r} has shape {tuple(y.shape)}, expected {want} "
                         f"from config.json")
      if e.bv not in flat:
        flat[e.bv] = np.empty(shapes[e.bv], y.dtype)
      flat[e.bv][e.index] = layout.TRANSFORMS[e.kind].from_hf(y, s)
      used.add(e.hf)
      progress.advance(y.nbytes, stored)
    _check_leftovers(directory, tensors, used, flat)
  return unflatten_params(flat), model_cfg


def read_hf_config(path: str | os.PathLike) -> dict:
  """The `model_cfg` of a transformers PaliGemma directory, from config.json and the safetensors headers
  alone (no weights read): what `from_hf` would return beside the params."""
  directory = _local_dir(str(path))
  config_path = directory / "config.json"
  if not config_path.is_file():
    raise FileNotFoundError(f"{config_path} not found: a transformers checkpoint directory has config.json "
                            "beside its safetensors files")
  with contextlib.ExitStack() as stack:
    _, model_cfg = _dims_and_cfg(json.loads(config_path.read_text()), _open_tensors(directory, stack), config_path)
  return model_cfg


def is_hf_dir(config: Mapping[str, Any]) -> bool:
  """Whether a directory's parsed config.json is a transformers PaliGemma's (a finetune workdir's is not)."""
  return config.get("model_type") == "paligemma"


def _local_dir(path: str) -> pathlib.Path:
  if not path.startswith("hf://"):
    return pathlib.Path(path)
  import huggingface_hub  # imported here: only hf:// paths need it
  repo_id, _, revision = path[len("hf://"):].strip("/").partition("@")
  try:
    return pathlib.Path(huggingface_hub.snapshot_download(repo_id, revision=revision or None, local_files_only=True))
  except huggingface_hub.errors.LocalEntryNotFoundError as e:
    raise FileNotFoundError(f"{path} is not in the local Hugging Face cache; fetch it first with "
                            f"`python -m components.download --model {path} --output DIR`") from e


def _files(directory: pathlib.Path) -> list[pathlib.Path]:
  index = directory / "model.safetensors.index.json"
  if index.is_file():  # sharded: the index names the files (others in the directory may be stale)
    files = sorted({directory / f for f in json.loads(index.read_text())["weight_map"].values()})
  else:
    files = sorted(directory.glob("*.safetensors"))
  if not files:
    raise FileNotFoundError(f"{directory} has no .safetensors files (PyTorch .bin checkpoints are not read: "
                            "convert them with transformers' save_pretrained(safe_serialization=True))")
  return files


def _open_tensors(directory: pathlib.Path, stack: contextlib.ExitStack) -> dict[str, tuple[Any, str]]:
  """Canonical name -> (open safetensors file, stored name), over every shard."""
  tensors = {}
  for file in _files(directory):
    handle = stack.enter_context(safe_open(file, framework="np"))
    for stored in handle.keys():
      tensors[layout.canonical_name(stored)] = (handle, stored)
  return tensors


def _check_leftovers(directory, tensors, used, flat) -> None:
  """Tensors we did not read must be ones PaliGemma never uses; anything else means a model we cannot hold."""
  leftovers = set(tensors) - used
  if "lm_head.weight" in leftovers or "language_model.lm_head.weight" in leftovers:
    name = "lm_head.weight" if "lm_head.weight" in leftovers else "language_model.lm_head.weight"
    handle, stored = tensors[name]
    embedding = flat["llm/embedder/input_embedding"]
    if not np.array_equal(handle.get_tensor(stored)[:embedding.shape[0]], embedding):
      raise ValueError(f"{directory}: {stored} differs from embed_tokens; PaliGemma ties them, this model "
                       "cannot be represented")
    leftovers.discard(name)
  # SigLIP's pooling head (unused by PaliGemma, present when vision_use_head is true) and RoPE buffers.
  unknown = sorted(n for n in leftovers if not re.match(r"vision_tower\.head\.|.*rotary_emb\.inv_freq$", n))
  if unknown:
    raise ValueError(f"{directory}: tensors {unknown[:8]}{' ...' if len(unknown) > 8 else ''} are not part of "
                     "a PaliGemma model; refusing to drop them silently")


def _dims_and_cfg(config: dict, tensors: dict, config_path: pathlib.Path) -> tuple[layout.Dims, dict]:
  """Sizes from the tensors' shapes; head counts and settings from config.json (transformers' defaults)."""
  def shape(name):
    if name not in tensors:
      raise ValueError(f"{config_path.parent}: tensor {layout.serialized_name(name)!r} is missing")
    handle, stored = tensors[name]
    return tuple(handle.get_slice(stored).get_shape())

  text, vision = config.get("text_config") or {}, config.get("vision_config") or {}
  family = text.get("model_type", "gemma")
  if family not in ("gemma", "gemma2"):
    raise ValueError(f"{config_path}: text_config.model_type is {family!r}; PaliGemma uses gemma or gemma2")
  rope = (text.get("rope_parameters") or {}).get("rope_theta", text.get("rope_theta", ROPE_THETA))
  if rope != ROPE_THETA:
    raise ValueError(f"{config_path}: rope_theta {rope} is not Gemma's {ROPE_THETA}")

  img_width, _, patch, _ = shape("vision_tower.embeddings.patch_embedding.weight")
  rows, width = shape("language_model.embed_tokens.weight")
  image_token = config.get("image_token_index", config.get("image_token_id", rows))
  heads = text.get("num_attention_heads", 8)
  head_dim = shape("language_model.layers.0.self_attn.q_proj.weight")[0] // heads
  if text.get("head_dim", head_dim) != head_dim:
    raise ValueError(f"{config_path}: head_dim {text['head_dim']} but q_proj holds {heads} heads of {head_dim}")
  post_norms = "language_model.layers.0.pre_feedforward_layernorm.weight" in tensors
  if post_norms != (family == "gemma2"):
    raise ValueError(f"{config_path}: text_config.model_type {family!r} but the weights "
                     f"{'have' if post_norms else 'lack'} Gemma 2's post norms")
  dims = layout.Dims(
      img_width=img_width, img_depth=_count(tensors, r"vision_tower\.encoder\.layers\.(\d+)\.layer_norm1\.weight"),
      img_mlp=shape("vision_tower.encoder.layers.0.mlp.fc1.weight")[0],
      img_heads=vision.get("num_attention_heads", 16), patch=patch,
      num_patches=shape("vision_tower.embeddings.position_embedding.weight")[0],
      vocab=min(image_token, rows),  # rows from <image> on were added by transformers
      width=width, depth=_count(tensors, r"language_model\.layers\.(\d+)\.input_layernorm\.weight"),
      mlp=shape("language_model.layers.0.mlp.gate_proj.weight")[0], heads=heads,
      kv_heads=shape("language_model.layers.0.self_attn.k_proj.weight")[0] // head_dim, head_dim=head_dim,
      post_norms=post_norms)

  llm = {"vocab_size": dims.vocab, "width": dims.width, "depth": dims.depth, "mlp_dim": dims.mlp,
         "num_heads": dims.heads, "num_kv_heads": dims.kv_heads, "head_dim": dims.head_dim,
         "post_norms": post_norms, "attn_logits_softcap": 0.0, "final_logits_softcap": 0.0,
         "query_pre_attn_norm": "rsqrt_head_dim"}
  final = text.get("final_logit_softcapping", 30.0 if family == "gemma2" else None)  # Gemma2Config's default
  llm["final_logits_softcap"] = float(final if final is not None else config.get(_SOFTCAP_KEY) or 0.0)
  if family == "gemma2":  # transformers' Gemma2Config defaults where config.json is silent
    llm["attn_logits_softcap"] = float(text.get("attn_logit_softcapping", 50.0) or 0.0)
    scalar = text.get("query_pre_attn_scalar", 256)
    if scalar == dims.width // dims.heads and scalar != dims.head_dim:
      llm["query_pre_attn_norm"] = "rsqrt_emb_per_head"
    elif scalar != dims.head_dim:
      raise ValueError(f"{config_path}: query_pre_attn_scalar {scalar} is neither head_dim ({dims.head_dim}) nor "
                       f"width/heads ({dims.width // dims.heads}); big_vision's Gemma supports only those")
  img = {"width": dims.img_width, "depth": dims.img_depth, "mlp_dim": dims.img_mlp, "num_heads": dims.img_heads,
         "patch_size": dims.patch, "image_size": _image_size(dims)}
  return dims, {"llm": _with_variant(llm, configs.LLM_VARIANTS, _default_llm_variant(llm)),
                "img": _with_variant(img, configs.IMG_VARIANTS, "So400m/14")}


def _count(tensors: dict, pattern: str) -> int:
  return len({m[1] for name in tensors if (m := re.fullmatch(pattern, name))})


def _default_llm_variant(llm: dict) -> str:
  if not llm["post_norms"]:
    return "gemma_2b"
  return "gemma2_27b" if llm["query_pre_attn_norm"] == "rsqrt_emb_per_head" else "gemma2_2b"


def _with_variant(fields: dict, variants: dict, default: str) -> dict:
  """The variant these fields match exactly (else `default`), plus overrides for what differs from it."""
  variant = next((name for name, v in variants.items() if all(v[k] == fields[k] for k in fields)), default)
  return {"variant": variant, **{k: v for k, v in fields.items() if variants[variant][k] != v}}
