"""Per-parameter policy: presets freeze exactly what they should, LoRA adds a true low-rank update in
each weight's layout, optimizer recipe, and big_vision's FSDP rule."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from components import paligemma
from components.common import policy, sharding
from components.finetune import config as config_lib, optim, params

@pytest.fixture(scope="module")
def abstract():
  cfg = paligemma.configs.model_config("tiny-v2")
  return params.abstract_params(cfg)


@pytest.mark.parametrize("preset,expected", [
    ("attention", r"llm/layers/attn/.*"), ("llm", r"llm/.*"), ("freeze-img", r"llm/.*"), ("full", r".*"),
    ("none", r"(?!)"), ("img/head/.*,llm/final_norm/.*", r"img/head/.*|llm/final_norm/.*")])
def test_presets_train_exactly_their_regex(abstract, preset, expected):
  config = config_lib.defaults()
  config.trainable = preset
  trainable, frozen = params.split_dtypes(abstract, config)
  names = set(policy.flatten(abstract))
  want = {n for n in names if re.fullmatch(expected, n)}
  assert set(policy.flatten(trainable)) == want
  assert set(policy.flatten(frozen)) == names - want
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(trainable))
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(frozen))


def test_typo_in_trainable_regex_is_an_error(abstract):
  config = config_lib.defaults()
  config.trainable = "llm/layer/attn/.*"
  with pytest.raises(ValueError, match="matches no parameter"):
    params.split_dtypes(abstract, config)


@pytest.mark.parametrize("name,eqn,x_shape", [
    ("llm/layers/attn/q_einsum/w", "ld,lndh->lnh", (2, 64)),  # [L, N, D, H], input D
    ("llm/layers/attn/kv_einsum/w", "ld,lckdh->lckh", (2, 64)),
    ("llm/layers/attn/attn_vec_einsum/w", "lnh,lnhd->ld", (2, 4, 16)),
    ("llm/layers/mlp/gating_einsum", "ld,lcdf->lcf", (2, 64)),
    ("llm/layers/mlp/linear", "lf,lfd->ld", (2, 128)),
    ("img/head/kernel", "d,de->e", (32,)),
])
def test_lora_is_a_low_rank_map_from_the_weights_inputs(abstract, name, eqn, x_shape):
  shape = policy.flatten(abstract)[name].shape
  rng = np.random.default_rng(0)
  adapter = {"a": rng.standard_normal(policy.lora_init(rng, name, shape, 3)["a"].shape).astype(np.float32),
             "b": rng.standard_normal(policy.lora_init(rng, name, shape, 3)["b"].shape).astype(np.float32)}
  delta = policy.lora_delta(name, shape, adapter, scale=0.5)
  assert delta.shape == shape
  x = rng.standard_normal(x_shape).astype(np.float32)
  y = np.einsum(eqn, x, delta)
  # The same map computed the LoRA way: flatten the inputs, x @ A @ B, unflatten the outputs.
  lead = 1 if name.startswith("llm/layers") else 0
  x_flat = x.reshape(x.shape[:lead] + (-1,))
  y_lora = 0.5 * np.einsum("...i,...ir,...ro->...o", x_flat, adapter["a"], adapter["b"])
  np.testing.assert_allclose(y.reshape(y_lora.shape), y_lora, rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(policy.lora_delta(name, shape, policy.lora_init(rng, name, shape, 3), 2.0),
                                np.zeros(shape))  # B = 0 at init: the adapted model starts at the base


def test_lora_trains_only_adapters(abstract):
  config = config_lib.defaults()
  config.trainable, config.lora.rank, config.lora.targets = "none", 4, "llm/layers/attn/.*"
  trainable, frozen = params.split_dtypes(abstract, config)
  lora = params.lora_abstract(abstract, config)
  assert not trainable and set(policy.flatten(frozen)) == set(policy.flatten(abstract))
  assert set(policy.flatten_adapters(lora)) == {n for n in policy.flatten(abstract)
                                                if n.startswith("llm/layers/attn/")}


def test_fsdp_rule_matches_big_vision():
  assert sharding.fsdp_spec((2048, 16384), 4, 8) == P(None, "fsdp")  # largest divisible dim
  assert sharding.fsdp_spec((18, 16384, 2048), 2, 8) == P(None, "fsdp", None)
  assert sharding.fsdp_spec((257152, 2048), 4, 8) == P("fsdp", None)
  assert sharding.fsdp_spec((1000, 999), 4, 8) == P()  # nothing divisible: replicated
  assert sharding.fsdp_spec((1024, 1024), 4, 8) == P()  # exactly 4 MiB: not over the threshold
  assert sharding.fsdp_spec((1024, 1025), 4, 1) == P()  # axis of 1


def test_schedule_and_adamw_recipe():
  sched = optim.schedule_fn(100, 0.1, "cosine")
  assert float(sched(0)) == 0.0  # first step multiplier 0
  assert float(sched(5)) == pytest.approx(0.5)
  assert float(sched(10)) == pytest.approx(1.0)
  assert float(sched(100)) == pytest.approx(0.0, abs=1e-7)
  cfg = config_lib.defaults().optimizer
  cfg.name, cfg.lr, cfg.wd, cfg.warmup_percent, cfg.grad_clip_norm = "adamw", 0.1, 0.01, 0.0, 0.0
  tree = {"a": {"kernel": jnp.ones(3)}, "b": {"scale": jnp.ones(3)}}
  tx, _ = optim.make(cfg, 10, tree)
  grads = jax.tree.map(jnp.zeros_like, tree)  # no gradient: only decoupled weight decay moves params
  updates, _ = tx.update(grads, tx.init(tree), tree)
  np.testing.assert_allclose(updates["a"]["kernel"], -0.01 * np.ones(3), rtol=1e-6)  # wd not x lr
  np.testing.assert_array_equal(updates["b"]["scale"], np.zeros(3))
  cfg.grad_clip_norm, cfg.wd = 1.0, 0.0
  tx, _ = optim.make(cfg, 10, tree)
  big = jax.tree.map(lambda x: 100.0 * x, tree)
  updates, _ = tx.update(big, tx.init(tree), tree)
  assert optax.tree.norm(updates) > 0
