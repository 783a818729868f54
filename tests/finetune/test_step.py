"""The train step: gradient accumulation gives the update of the whole batch; LoRA trains only its
adapters and `load_trained_params` merges them into the weights."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from components.common import policy, sharding
from components.finetune import config as config_lib, state as state_lib
from _finetune_helpers import TINY_CONFIG


def _batch(config, model_cfg, seed=0):
  from components import paligemma
  rng = np.random.default_rng(seed)
  size = paligemma.configs.image_size(model_cfg)
  text = rng.integers(4, 300, (config.batch_size, config.text_len + 1)).astype(np.int32)
  mask = (np.arange(config.text_len + 1) >= 5).astype(np.int32)[None].repeat(config.batch_size, 0)
  mask[:, -rng.integers(1, 4):] = 0  # different numbers of supervised tokens per row
  return {"image": rng.uniform(-1, 1, (config.batch_size, size, size, 3)).astype(np.float32), "text": text,
          "mask_ar": mask, "mask_loss": mask}


@pytest.mark.slow
def test_gradient_accumulation_matches_the_full_batch():
  results = []
  for accum in (1, 4):
    config = config_lib.load_config(TINY_CONFIG, [f"grad_accum_steps={accum}", "optimizer.name=sgd",
                                                  "optimizer.warmup_percent=0", "optimizer.grad_clip_norm=0"])
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
    setup = state_lib.build(config, mesh, total_steps=10)
    state, frozen = state_lib.init_state(setup, config)
    batch = {k: jax.device_put(v, sharding.batch_sharding(mesh)) for k, v in _batch(config, setup.source.model_cfg).items()}
    with sharding.use_mesh(mesh):
      new_state, metrics = state_lib.train_step_fn(setup, config)(state, frozen, batch)
    results.append((float(metrics["loss"]), jax.tree.map(np.asarray, new_state["train"])))
  (loss1, train1), (loss4, train4) = results
  # Equal-size micro-batches: the mean of micro-batch means is the batch mean.
  assert loss4 == pytest.approx(loss1, rel=1e-5)
  for a, b in zip(jax.tree.leaves(train1), jax.tree.leaves(train4)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_lora_run_changes_only_targets_and_is_merged_on_load(tmp_path, dataset_dir, tokenizer_path):
  from components.finetune import load_trained_params, params as params_lib, train
  overrides = [f"data_dir={dataset_dir}", f"tokenizer={tokenizer_path}", "total_steps=3", "eval_every=0",
               "checkpoint_every=3", "trainable=none", "lora.rank=2", "lora.targets=llm/layers/attn/.*",
               "optimizer.lr=0.05", "optimizer.warmup_percent=0", "valid_split="]
  config = config_lib.load_config(TINY_CONFIG, overrides)
  train(config, str(tmp_path))
  merged, _ = load_trained_params(str(tmp_path))
  mesh = sharding.make_mesh(1, 1, devices=jax.devices()[:1])
  source = params_lib.resolve_model(config)
  trainable, frozen, _ = params_lib.init_params(source, config, mesh)
  base = policy.flatten(jax.tree.map(np.asarray, policy.merge(trainable, frozen)))
  merged = policy.flatten(merged)
  changed = {k for k in base if not np.array_equal(base[k], merged[k])}
  assert changed == {k for k in base if k.startswith("llm/layers/attn/")}
