"""Per-parameter policy as data: what trains, what gets LoRA adapters, what gets weight decay.

Parameters are named by their `/`-joined path (`llm/layers/attn/q_einsum/w`), the names of the .npz
checkpoints, and every rule is a full-match regex over that name. The model's params are split into
two trees of the same nesting: `trainable` (f32, optimised) and `frozen` (stored in `frozen_dtype`).
"""
from __future__ import annotations

import re

import flax.traverse_util
import jax
import numpy as np

# `trainable` presets: which parameters get gradients (full-match regexes over `/`-joined paths).
TRAINABLE_PRESETS = {
    "attention": ("llm/layers/attn/.*",),  # the official 16 GB notebook recipe
    "llm": ("llm/.*",),
    "full": (".*",),
    "freeze-img": ("llm/.*",),  # same set as `llm`; the name big_vision transfer configs use
    "none": (),  # with LoRA: only the adapters train
}


def trainable_regexes(spec) -> tuple[str, ...]:
  """`trainable` (a preset name, regexes joined by ",", or a sequence) -> full-match regexes."""
  if isinstance(spec, (list, tuple)):
    return tuple(spec)
  if spec in TRAINABLE_PRESETS:
    return TRAINABLE_PRESETS[spec]
  return tuple(r.strip() for r in spec.split(",") if r.strip())


def flatten(tree) -> dict:
  return flax.traverse_util.flatten_dict(tree, sep="/")


def unflatten(flat: dict) -> dict:
  return flax.traverse_util.unflatten_dict(flat, sep="/")


def matches(name: str, regexes) -> bool:
  return any(re.fullmatch(r, name) for r in regexes)


def split_trainable(params, regexes) -> tuple[dict, dict]:
  """(trainable, frozen) nested dicts; every leaf lands in exactly one of them."""
  flat = flatten(params)
  trainable = {k: v for k, v in flat.items() if matches(k, regexes)}
  frozen = {k: v for k, v in flat.items() if k not in trainable}
  return unflatten(trainable), unflatten(frozen)


def merge(*trees) -> dict:
  """Union of disjoint nested dicts (the inverse of `split_trainable`)."""
  flat = {}
  for tree in trees:
    flat.update(flatten(tree))
  return unflatten(flat)


def check_regexes_match(params, regexes, what: str) -> None:
  """Fails on a regex that matches no parameter: almost always a typo that would silently train nothing."""
  names = list(flatten(params))
  for r in regexes:
    if not any(re.fullmatch(r, n) for n in names):
      raise ValueError(f"{what} regex {r!r} matches no parameter; parameter names look like {names[:4]}")


# --- LoRA ------------------------------------------------------------------------------------------
# An adapter adds `scale * A @ B` to a weight viewed as a matrix [inputs, outputs]; stacked layers keep
# their leading depth axis. Which axes are "inputs" depends on the einsum layout of the weight:
STACKED = r"(llm/layers|img/Transformer/encoderblock)/.*"
LORA_INPUT_AXES = (  # (regex, input axes of one layer's weight); first match wins
    (r".*/q_einsum/w", (1,)),  # [N, D, H]
    (r".*/kv_einsum/w", (2,)),  # [2, K, D, H]
    (r".*/qkv_einsum/w", (2,)),  # [3, N, D, H]
    (r".*/attn_vec_einsum/w", (0, 1)),  # [N, H, D]
    (r".*/gating_einsum", (1,)),  # [2, D, F]: gate and up share A
    (r".*/out/kernel", (0, 1)),  # ViT attention output [h, d, D]
    (r".*", (0,)),  # dense kernels [D_in, ..., D_out] and mlp/linear [F, D]
)


def lora_layout(name: str, shape) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
  """(number of stacked axes, input axes, output axes) of a weight, axes counted in the full shape."""
  lead = 1 if re.fullmatch(STACKED, name) else 0
  per_layer = next(axes for r, axes in LORA_INPUT_AXES if re.fullmatch(r, name))
  inputs = tuple(lead + a for a in per_layer)
  outputs = tuple(a for a in range(lead, len(shape)) if a not in inputs)
  if not outputs:
    raise ValueError(f"LoRA target {name} {tuple(shape)} has no output axes; exclude it from lora.targets")
  return lead, inputs, outputs


def lora_init(rng: np.random.Generator, name: str, shape, rank: int) -> dict:
  """A ~ N(0, 1/fan_in), B = 0: the adapted model starts exactly at the base model."""
  lead, inputs, outputs = lora_layout(name, shape)
  stack = tuple(shape[:lead])
  fan_in = int(np.prod([shape[a] for a in inputs]))
  fan_out = int(np.prod([shape[a] for a in outputs]))
  a = rng.standard_normal(stack + (fan_in, rank), dtype=np.float32) / np.sqrt(fan_in)
  return {"a": a.astype(np.float32), "b": np.zeros(stack + (rank, fan_out), np.float32)}


def lora_delta(name: str, shape, adapter: dict, scale: float, xp=np):
  """`scale * A @ B` laid out like the weight (xp = numpy or jax.numpy)."""
  lead, inputs, outputs = lora_layout(name, shape)
  perm = tuple(range(lead)) + inputs + outputs
  delta = xp.matmul(adapter["a"], adapter["b"]) * scale  # [*stack, fan_in, fan_out]
  delta = delta.reshape(tuple(shape[a] for a in perm))
  return xp.transpose(delta, np.argsort(perm))


def lora_scale(rank: int, alpha: float) -> float:
  """The factor of every adapter's update, alpha / rank (1 without adapters)."""
  return alpha / rank if rank > 0 else 1.0


def lora_targets(params, regexes) -> list[str]:
  return [k for k in flatten(params) if matches(k, regexes)]


def apply_lora(params: dict, lora: dict, scale: float, xp=np) -> dict:
  """params with every adapter merged in: W + scale * A @ B (in the weight's dtype promoted to f32)."""
  if not lora:
    return params
  flat = flatten(params)
  for name, adapter in flatten_adapters(lora).items():
    w = flat[name]
    flat[name] = w.astype(xp.float32) + lora_delta(name, w.shape, adapter, scale, xp)
  return unflatten(flat)


def flatten_adapters(lora: dict) -> dict:
  """{param name: {"a", "b"}} from the nested adapter tree (leaves `.../a`, `.../b`)."""
  out: dict = {}
  for key, value in flatten(lora).items():
    name, leaf = key.rsplit("/", 1)
    out.setdefault(name, {})[leaf] = value
  return out


def decay_mask(tree, regex: str):
  """True on leaves whose name (within `tree`) matches the weight-decay regex; keeps empty subtrees."""
  def one(path, _):
    return bool(re.fullmatch(regex, "/".join(str(getattr(k, "key", k)) for k in path)))
  return jax.tree_util.tree_map_with_path(one, tree)
