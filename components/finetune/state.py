"""The train state's shapes and shardings, shared by the trainer, the fit planner and the loader.

  state  = {"train": {"params": trainable f32, "lora": adapters f32}, "opt": optimizer state,
            "step": int32, "rng": raw key data uint32 (orbax saves plain arrays)}
  frozen = frozen weights in `frozen_dtype`

Everything is first built abstractly (`jax.eval_shape`), so the planner can compile a 28B model's step
for a TPU pod on a laptop and the trainer can restore a checkpoint straight onto its shards.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from components import paligemma
from components.common import sharding
from components.finetune import autotune, optim, params
from components.finetune import step as step_lib


@dataclasses.dataclass
class Setup:
  model: paligemma.Model
  model_cfg: dict  # what `model` was built from: the source's, with attention chosen for the mesh's devices
  source: params.ModelSource
  tx: optax.GradientTransformation
  lr_fn: callable
  abstract_full: dict  # every model weight, f32 shapes
  abstract_state: dict  # ShapeDtypeStructs carrying their shardings
  abstract_frozen: dict
  mesh: jax.sharding.Mesh

  @property
  def state_shardings(self):
    return jax.tree.map(lambda x: x.sharding, self.abstract_state)

  @property
  def frozen_shardings(self):
    return jax.tree.map(lambda x: x.sharding, self.abstract_frozen)


def _with_shardings(tree, mesh, min_bytes):
  shards = sharding.tree_shardings(tree, mesh, min_bytes)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shards)


def build(config, mesh, total_steps: int, source: params.ModelSource | None = None) -> Setup:
  """Model, optimizer and abstract sharded state for `config` on `mesh` (nothing allocated).

  "auto" attention is chosen for the mesh's devices (a TPU plan is traced on a CPU host); on a CPU, layer
  loops without remat are unrolled (autotune.unroll_on_cpu). An "auto" remat policy is chosen later
  (`tune_train_step`, then `with_remat`); until then the model keeps its own."""
  source = source or params.resolve_model(config)
  device = mesh.devices.flat[0]
  model_cfg = paligemma.configs.choose_attention(source.model_cfg, device.platform, device.device_kind)
  model_cfg = autotune.unroll_on_cpu(model_cfg, device.platform, config.model_overrides)
  model = paligemma.Model(**model_cfg)
  abstract_full = params.abstract_params(source.model_cfg)
  trainable, frozen = params.split_dtypes(abstract_full, config)
  train_tree = {"params": trainable, "lora": params.lora_abstract(abstract_full, config)}
  tx, lr_fn = optim.make(config.optimizer, total_steps, train_tree)
  abstract_state = {"train": train_tree, "opt": jax.eval_shape(tx.init, train_tree),
                    "step": jax.ShapeDtypeStruct((), jnp.int32),
                    "rng": jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))}
  min_bytes = config.fsdp_min_bytes
  return Setup(model, model_cfg, source, tx, lr_fn, abstract_full, _with_shardings(abstract_state, mesh, min_bytes),
               _with_shardings(frozen, mesh, min_bytes), mesh)


def with_remat(setup: Setup, config, remat_policy: str) -> Setup:
  """`setup` whose model runs both towers with `remat_policy` (on a CPU, unrolled where that is faster)."""
  model_cfg = {tower: {**cfg, "remat_policy": remat_policy} for tower, cfg in setup.model_cfg.items()}
  model_cfg = autotune.unroll_on_cpu(model_cfg, setup.mesh.devices.flat[0].platform, config.model_overrides)
  return dataclasses.replace(setup, model=paligemma.Model(**model_cfg), model_cfg=model_cfg)


def tune_train_step(setup: Setup, config, limit_bytes: int | None) -> autotune.Decision:
  """The train step compiled ahead of time: with `remat_policy="auto"` the fastest that fits `limit_bytes`
  per device (autotune.py), else the configured one; the decision holds its memory figures."""
  return autotune.choose(
      autotune.compile_step_fn(setup, config, abstract_batch(config, setup)), batch=config.batch_size,
      batch_shards=setup.mesh.size, remat_policy=config.remat_policy, grad_accum_steps=config.grad_accum_steps,
      limit_bytes=limit_bytes)


def init_state(setup: Setup, config) -> tuple[dict, dict]:
  """(state, frozen) on device: weights from the checkpoint or seeded init, fresh optimizer state."""
  trainable, frozen, lora = params.init_params(setup.source, config, setup.mesh)
  train_tree = {"params": trainable, "lora": lora}
  make = jax.jit(lambda t: {"train": t, "opt": setup.tx.init(t), "step": jnp.zeros((), jnp.int32),
                            "rng": jax.random.key_data(jax.random.key(config.seed))},
                 out_shardings=setup.state_shardings)
  return make(train_tree), frozen


def abstract_batch(config, setup: Setup) -> dict:
  """ShapeDtypeStructs of one global training batch as data.py makes it, sharded over the batch axes."""
  size = paligemma.configs.image_size(setup.model_cfg)
  bs = sharding.batch_sharding(setup.mesh)
  return {"image": jax.ShapeDtypeStruct((config.batch_size, size, size, 3), jnp.float32, sharding=bs),
          **{k: jax.ShapeDtypeStruct((config.batch_size, config.text_len + 1), jnp.int32, sharding=bs)
             for k in ("text", "mask_ar", "mask_loss")}}


def train_step_fn(setup: Setup, config, grad_accum_steps: int | None = None):
  """The jitted step: state donated, frozen weights and batch read-only."""
  fn = step_lib.make_train_step(
      setup.model, setup.tx, lora_scale=params.lora_scale(config), label_smoothing=config.label_smoothing,
      grad_accum_steps=grad_accum_steps or config.grad_accum_steps)
  replicated = sharding.replicated(setup.mesh)
  return jax.jit(fn, donate_argnums=(0,), out_shardings=(setup.state_shardings, replicated))


def eval_step_fn(setup: Setup, config):
  fn = step_lib.make_eval_step(setup.model, lora_scale=params.lora_scale(config))
  return jax.jit(fn, out_shardings=sharding.replicated(setup.mesh))
