"""The loss and the jitted train / eval steps.

The train state is one pytree: {"train": {"params": trainable weights (f32), "lora": adapters (f32)},
"opt": optimizer state, "step": int32, "rng": raw key data}. Frozen weights travel separately (never donated,
never differentiated). Dropout keys are `fold_in(rng, step)`, so a resumed run draws the same ones.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from components.common import policy


def softmax_xent(logits, targets, weights, label_smoothing: float = 0.0):
  """big_vision's loss per example: mean over supervised tokens of -log p(target) -> [B].

  logits [B, T, V] (any float dtype, computed in f32), targets/weights [B, T].
  """
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  vocab = logits.shape[-1]
  labels = jax.nn.one_hot(targets, vocab, dtype=jnp.float32)
  if label_smoothing:
    labels = labels * (1.0 - label_smoothing) + label_smoothing / vocab
  token_nll = -jnp.sum(logp * labels, axis=-1)  # [B, T]
  weights = weights.astype(jnp.float32)
  return jnp.sum(token_nll * weights, axis=-1) / jnp.clip(jnp.sum(weights, axis=-1), 1.0)


def model_params(train: dict, frozen: dict, *, lora_scale: float):
  """The full parameter tree the model sees: frozen + trainable (+ merged LoRA), as held. Each layer casts
  its weights to the model's matmul dtype (`compute_dtype`), so gradients reach the f32 masters in f32."""
  params = policy.merge(train["params"], frozen)
  return policy.apply_lora(params, train["lora"], lora_scale, xp=jnp)


def batch_loss(model, params, batch, rng, *, train: bool, label_smoothing: float = 0.0):
  """Per-example losses [B] of a batch in big_vision's layout (`text`, `mask_ar`, `mask_loss` [B, T+1])."""
  text, mask_ar = batch["text"], batch["mask_ar"]
  logits, _ = model.apply({"params": params}, batch["image"], text[:, :-1], mask_ar[:, :-1], train=train,
                          rngs={"dropout": rng} if train else None)
  return softmax_xent(logits, text[:, 1:], batch["mask_loss"][:, 1:], label_smoothing)


def make_train_step(model, tx: optax.GradientTransformation, *, lora_scale: float = 1.0,
                    label_smoothing: float = 0.0, grad_accum_steps: int = 1, train: bool = True):
  """step(state, frozen, batch) -> (state, metrics); jit it with the state donated."""

  def loss_fn(train_tree, frozen, batch, rng):
    params = model_params(train_tree, frozen, lora_scale=lora_scale)
    return jnp.mean(batch_loss(model, params, batch, rng, train=train, label_smoothing=label_smoothing))

  grad_fn = jax.value_and_grad(loss_fn)

  def step(state, frozen, batch):
    rng = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
    if grad_accum_steps == 1:
      loss, grads = grad_fn(state["train"], frozen, batch, rng)
    else:
      # Micro-batch i takes rows i, i+A, i+2A, ...: each device's rows stay on that device.
      micro = jax.tree.map(
          lambda x: x.reshape(x.shape[0] // grad_accum_steps, grad_accum_steps, *x.shape[1:]).swapaxes(0, 1),
          batch)

      def accumulate(carry, xs):
        i, mb = xs
        loss, grads = grad_fn(state["train"], frozen, mb, jax.random.fold_in(rng, i))
        return jax.tree.map(jnp.add, carry, (loss, grads)), None

      zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, state["train"]))
      (loss, grads), _ = jax.lax.scan(accumulate, zeros, (jnp.arange(grad_accum_steps), micro))
      loss, grads = jax.tree.map(lambda x: x / grad_accum_steps, (loss, grads))
    updates, opt = tx.update(grads, state["opt"], state["train"])
    new_state = {"train": optax.apply_updates(state["train"], updates), "opt": opt,
                 "step": state["step"] + 1, "rng": state["rng"]}
    return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}

  return step


def make_eval_step(model, *, lora_scale: float = 1.0):
  """eval(train_tree, frozen, batch) -> (sum of per-example losses over `valid` rows, number of rows)."""

  def step(train_tree, frozen, batch):
    params = model_params(train_tree, frozen, lora_scale=lora_scale)
    per_example = batch_loss(model, params, batch, None, train=False)
    valid = batch["valid"].astype(jnp.float32)
    return jnp.sum(per_example * valid), jnp.sum(valid)

  return step
