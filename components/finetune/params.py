"""From a config to placed parameters: model config, init checkpoint, split, cast, shard.

  resolve_model(config)   -> ModelSource (model name and model_cfg with the trainer's overrides, .npz, tokenizer)
  abstract_params(...)    -> ShapeDtypeStructs of the whole model (nothing allocated)
  init_params(...)        -> (trainable f32, frozen in frozen_dtype), placed on their FSDP shardings

Trainer overrides on every model: `config.model_overrides` (e.g. llm.dropout), final logits softcap 0
(PaliGemma 2 transfer configs: logits softcap off for transfer), the matmul dtype (`compute_dtype`) and
remat policy of both towers (an "auto" remat policy is chosen later, by autotune.py; until then the model
keeps its own).
"""
from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from components import paligemma
from components.common import policy, sharding
from components.common.checkpoints import Checkpoint, find_vqvae, infer_model_json
from components.finetune import config as config_lib


@dataclasses.dataclass(frozen=True)
class ModelSource:
  name: str  # the model directory's model.json `name`; config.model_name for a bare model
  model_cfg: dict
  checkpoint: str | None  # an .npz, or None for random init
  tokenizer: str | None
  vqvae: str | None = None  # the mask codec its model.json names (segmentation), as a path/URI; None: none


def _read_json(path: str) -> dict | None:
  import fsspec  # only for checkpoints given by path: not needed to build a model (benchmarks/gpu_suite.py)

  fs, _ = fsspec.core.url_to_fs(path)
  if not fs.exists(path):
    return None
  with fsspec.open(path, "r") as f:
    return json.load(f)


def resolve_model(config) -> ModelSource:
  """Which model, which weights, which tokenizer (ARCHITECTURE.md: a model directory or an .npz). A checkpoint's
  model.json says which model it holds (an .npz without one beside it is described by its array shapes);
  `config.model_name` names the model only without a checkpoint."""
  checkpoint, model_json = config.checkpoint or None, None
  if checkpoint and not checkpoint.endswith(".npz"):  # a model directory
    model_json = _read_json(os.path.join(checkpoint, "model.json"))
    if model_json is None:
      raise FileNotFoundError(f"config.checkpoint={checkpoint} is neither an .npz nor a model directory "
                              "with model.json; run components.download or point at the .npz")
    checkpoint = os.path.join(checkpoint, model_json["checkpoint"])
  elif checkpoint:
    model_json = _read_json(os.path.join(os.path.dirname(checkpoint), "model.json"))
    if model_json is None:  # a bare .npz: its array shapes say which model it is
      model_json = infer_model_json(checkpoint)
  if model_json is not None:
    model_cfg = {k: dict(v) for k, v in model_json.items() if k in ("llm", "img")}
    name = model_json.get("name") or config.model_name
  else:
    model_cfg, name = paligemma.configs.model_config(config.model_name), config.model_name
  for tower in ("llm", "img"):
    model_cfg[tower] = {**model_cfg.get(tower, {}), **config_lib.model_overrides(config, tower),
                        "dtype": config.compute_dtype}
    if config.remat_policy != "auto":
      model_cfg[tower]["remat_policy"] = config.remat_policy
  model_cfg["llm"].update(final_logits_softcap=0.0)
  tokenizer = config.tokenizer or (os.path.join(os.path.dirname(checkpoint), "tokenizer.model")
                                   if checkpoint else None)
  vqvae = find_vqvae(Checkpoint("npz", checkpoint, os.path.dirname(checkpoint), tokenizer or ""),
                     model_json) if model_json else None
  if vqvae and "://" not in vqvae:
    vqvae = os.path.abspath(vqvae)  # the workdir's model.json names it from anywhere
  return ModelSource(name, model_cfg, checkpoint, tokenizer, vqvae)


def abstract_params(model_cfg: dict) -> dict:
  """The model's parameter shapes (f32), from `jax.eval_shape`: nothing is allocated."""
  return jax.eval_shape(lambda: paligemma.init_params(model_cfg, jax.random.key(0)))


def split_dtypes(abstract, config) -> tuple[dict, dict]:
  """Abstract (trainable f32, frozen frozen_dtype) trees by the `trainable` regexes."""
  regexes = config_lib.trainable_regexes(config.trainable)
  policy.check_regexes_match(abstract, regexes, "config.trainable")
  trainable, frozen = policy.split_trainable(abstract, regexes)
  frozen_dtype = jnp.dtype(config.frozen_dtype)
  cast = lambda dtype: (lambda x: jax.ShapeDtypeStruct(x.shape, dtype))
  return jax.tree.map(cast(jnp.float32), trainable), jax.tree.map(cast(frozen_dtype), frozen)


def lora_abstract(abstract, config) -> dict:
  if config.lora.rank <= 0:
    return {}
  targets = [r.strip() for r in config.lora.targets.split(",") if r.strip()]
  policy.check_regexes_match(abstract, targets, "config.lora.targets")
  out = {}
  for name in policy.lora_targets(abstract, targets):
    shape = policy.flatten(abstract)[name].shape
    lead, inputs, outputs = policy.lora_layout(name, shape)
    stack = tuple(shape[:lead])
    fan_in = int(np.prod([shape[a] for a in inputs]))
    fan_out = int(np.prod([shape[a] for a in outputs]))
    out[f"{name}/a"] = jax.ShapeDtypeStruct(stack + (fan_in, config.lora.rank), jnp.float32)
    out[f"{name}/b"] = jax.ShapeDtypeStruct(stack + (config.lora.rank, fan_out), jnp.float32)
  return policy.unflatten(out)


def lora_scale(config) -> float:
  return policy.lora_scale(config.lora.rank, config.lora.alpha)


def _place(host_tree, abstract_tree, shardings):
  """numpy leaves -> global arrays in the abstract dtype; every host holds the same numpy values."""
  def one(x, spec, shard):
    return jax.make_array_from_callback(spec.shape, shard, lambda idx: np.asarray(x[idx]).astype(spec.dtype))
  return jax.tree.map(one, host_tree, abstract_tree, shardings)


def init_params(source: ModelSource, config, mesh) -> tuple[dict, dict, dict]:
  """(trainable, frozen, lora) placed on the mesh: from the .npz, or seeded random init."""
  abstract = abstract_params(source.model_cfg)
  trainable_abs, frozen_abs = split_dtypes(abstract, config)
  lora_abs = lora_abstract(abstract, config)
  min_bytes = config.fsdp_min_bytes
  shards = {k: sharding.tree_shardings(t, mesh, min_bytes)
            for k, t in (("trainable", trainable_abs), ("frozen", frozen_abs), ("lora", lora_abs))}

  if source.checkpoint:
    host = paligemma.load(source.checkpoint, source.model_cfg)
    host_trainable, host_frozen = policy.split_trainable(host, config_lib.trainable_regexes(config.trainable))
    trainable = _place(host_trainable, trainable_abs, shards["trainable"])
    frozen = _place(host_frozen, frozen_abs, shards["frozen"])
  else:
    full_shards = sharding.tree_shardings(abstract, mesh, min_bytes)
    init = jax.jit(lambda key: paligemma.init_params(source.model_cfg, key), out_shardings=full_shards)
    params = init(jax.random.key(config.seed))
    trainable, frozen = policy.split_trainable(params, config_lib.trainable_regexes(config.trainable))
    cast = jax.jit(lambda t, f: (t, jax.tree.map(lambda x, a: x.astype(a.dtype), f, frozen_abs)),
                   out_shardings=(shards["trainable"], shards["frozen"]), donate_argnums=(0, 1))
    trainable, frozen = cast(trainable, frozen)

  rng = np.random.default_rng(config.seed)
  host_lora = policy.unflatten({
      f"{name}/{k}": v
      for name, shape in sorted((n, policy.flatten(abstract)[n].shape)
                                for n in policy.flatten_adapters(lora_abs))
      for k, v in policy.lora_init(rng, name, shape, config.lora.rank).items()}) if lora_abs else {}
  lora = _place(host_lora, lora_abs, shards["lora"]) if lora_abs else {}
  return trainable, frozen, lora
