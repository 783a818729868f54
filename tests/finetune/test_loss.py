"""The train step's loss is big_vision's: log-softmax of the text logits, per-example mean over
supervised target tokens (mask_loss[:, 1:]), then the batch mean; checked against logits big_vision
itself produced (../shared/fixtures/bigvision)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from components import paligemma
from components.finetune import step as step_lib


def _hand_loss(logits, text, mask_loss, label_smoothing=0.0):
  logits = logits.astype(np.float64)
  logp = logits - logits.max(-1, keepdims=True)
  logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
  targets, weights = text[:, 1:], mask_loss[:, 1:].astype(np.float64)
  vocab = logits.shape[-1]
  soft = np.eye(vocab)[targets] * (1 - label_smoothing) + label_smoothing / vocab
  token = -(soft * logp).sum(-1)
  return token, weights


@pytest.mark.parametrize("name,label_smoothing", [("tiny_v1", 0.0), ("tiny_v2", 0.1)])
def test_train_step_loss_is_big_visions(bigvision_fixtures, name, label_smoothing):
  io = dict(np.load(bigvision_fixtures / f"{name}.io.npz"))
  model_cfg = paligemma.configs.model_config(name.replace("_", "-"))
  model_cfg["llm"]["final_logits_softcap"] = 0.0  # as the trainer sets it
  model = paligemma.Model(**model_cfg)
  params = paligemma.load(str(bigvision_fixtures / f"{name}.params.npz"), model_cfg)
  params = jax.tree.map(jnp.asarray, params)
  state = {"train": {"params": params, "lora": {}}, "opt": optax.sgd(0.0).init({"params": params, "lora": {}}),
           "step": jnp.zeros((), jnp.int32), "rng": jax.random.key_data(jax.random.key(0))}
  train_step = jax.jit(step_lib.make_train_step(model, optax.sgd(0.0), label_smoothing=label_smoothing))
  batch = {k: jnp.asarray(io[k]) for k in ("image", "text", "mask_ar", "mask_loss")}
  _, metrics = train_step(state, {}, batch)
  token, weights = _hand_loss(io["text_logits"], io["text"], io["mask_loss"], label_smoothing)
  expected = ((token * weights).sum(-1) / np.maximum(weights.sum(-1), 1)).mean()
  assert float(metrics["loss"]) == pytest.approx(expected, rel=1e-5)
  # The examples supervise different numbers of tokens, so a loss pooling all tokens would differ.
  pooled = (token * weights).sum() / weights.sum()
  assert abs(pooled - expected) > 1e-4
