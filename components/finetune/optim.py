"""Optimizers and the learning-rate schedule, following big_vision's `optax.make` chain.

For every optimizer the update is
  clip_by_global_norm -> base rule (sgd / adam / adafactor) -> x lr -> + wd * param on `wd_regex`
  -> x schedule(step) -> x -1
so weight decay is decoupled (not scaled by lr, only by the schedule), and with warm-up the first step
has multiplier 0, as in big_vision.
"""
from __future__ import annotations

import jax.numpy as jnp
import optax

from components.common import policy


def schedule_fn(total_steps: int, warmup_percent: float, kind: str = "cosine"):
  """big_vision's `create_learning_rate_schedule` as a multiplier in [0, 1] of the base lr."""
  warmup = int(warmup_percent * total_steps)

  def fn(step):
    step = jnp.asarray(step, jnp.float32)
    progress = jnp.clip((step - warmup) / max(total_steps - warmup, 1), 0.0, 1.0)
    if kind == "cosine":
      mult = 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
    elif kind == "linear":
      mult = 1.0 - progress
    elif kind == "constant":
      mult = jnp.ones_like(progress)
    else:
      raise ValueError(f"config.optimizer.schedule={kind!r}; use cosine, linear or constant")
    if warmup:
      mult = mult * jnp.minimum(1.0, step / warmup)
    return mult
  return fn


def make(opt_cfg, total_steps: int, trainable_tree) -> tuple[optax.GradientTransformation, callable]:
  """(optimizer over `trainable_tree`, lr(step) for logging)."""
  sched = schedule_fn(total_steps, opt_cfg.warmup_percent, opt_cfg.schedule)
  chain = []
  if opt_cfg.grad_clip_norm > 0:
    chain.append(optax.clip_by_global_norm(opt_cfg.grad_clip_norm))
  name = opt_cfg.name
  if name == "sgd":
    if opt_cfg.momentum:
      chain.append(optax.trace(decay=opt_cfg.momentum))
  elif name in ("adam", "adamw"):
    chain.append(optax.scale_by_adam(b1=opt_cfg.b1, b2=opt_cfg.b2))
  elif name == "adafactor":
    chain.append(optax.scale_by_factored_rms())
  else:
    raise ValueError(f"config.optimizer.name={name!r}; use sgd, adam, adamw or adafactor")
  chain.append(optax.scale(opt_cfg.lr))
  if opt_cfg.wd:
    chain.append(optax.add_decayed_weights(opt_cfg.wd, mask=policy.decay_mask(trainable_tree, opt_cfg.wd_regex)))
  chain.append(optax.scale_by_schedule(sched))
  chain.append(optax.scale(-1.0))
  return optax.chain(*chain), lambda step: opt_cfg.lr * sched(step)
