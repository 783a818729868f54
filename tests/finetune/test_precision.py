"""bf16 by default, one switch: `compute_dtype` sets the matmul dtype of both towers (the model's `dtype`),
every shipped config's train step runs its matmuls in bf16 (forward and backward), the f32 masters stay
f32, and bf16 agrees with f32 within what bf16 rounding allows."""
import collections
import inspect
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from components.common import sharding
from components.finetune import config as config_lib, state as state_lib, step as step_lib
from _finetune_helpers import REPO, TINY_CONFIG

SHIPPED = sorted((REPO / "components/finetune/configs").glob("*.py")) + [REPO / "pipelines/local_demo.py"]
EXACT = {"tiny_test"}  # float32 on purpose: tests compare runs bit for bit (see the file)


def _lowered_train_step(config) -> str:
  mesh = sharding.make_mesh(1, 1, devices=jax.devices()[:1])
  setup = state_lib.build(config, mesh, total_steps=10)
  with sharding.use_mesh(mesh):
    lowered = state_lib.train_step_fn(setup, config).lower(setup.abstract_state, setup.abstract_frozen,
                                                           state_lib.abstract_batch(config, setup))
  return lowered.as_text()


def _pipeline_defaults() -> list[str]:
  """The finetune config the KFP component and the pipeline use when none is given."""
  from components.finetune import component, task
  from pipelines.dag import build_pipeline
  from pipelines.targets import get_target
  component_default = inspect.signature(component._finetune_model).parameters["config"].default
  spec = build_pipeline(get_target("local")).pipeline_spec
  pipeline_default = spec.root.input_definitions.parameters["finetune_config"].default_value.string_value
  return [task.config_path(component_default), task.config_path(pipeline_default)]


def test_pipeline_defaults_are_shipped_configs():
  assert {pathlib.Path(p).resolve() for p in _pipeline_defaults()} <= {p.resolve() for p in SHIPPED}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_config_runs_its_matmuls_in_bf16(path, hlo_dot_types):
  config = config_lib.load_config(str(path))
  dots = collections.Counter(hlo_dot_types(_lowered_train_step(config)))  # {(lhs, rhs, result): count}
  if path.stem in EXACT:
    assert config.compute_dtype == "float32" and set(dots) == {("f32", "f32", "f32")}, dots
    return
  assert config.compute_dtype == "bfloat16"
  # Forward and backward: every matmul of both towers, the attention and the tied logits, bf16 operands
  # (no f32 upcast in the backward pass) accumulated into an f32 result (a bf16-result dot is an f32 dot
  # on XLA:CPU): precision.einsum.
  assert dots.get(("bf16", "bf16", "f32"), 0) > 20 and set(dots) == {("bf16", "bf16", "f32")}, dots


def test_f32_masters_stay_f32_and_compute_dtype_reaches_both_towers():
  config = config_lib.load_config(TINY_CONFIG, ["compute_dtype=bfloat16", "frozen_dtype=bfloat16", "trainable=llm"])
  setup = state_lib.build(config, sharding.make_mesh(1, 1, devices=jax.devices()[:1]), total_steps=10)
  assert setup.model_cfg["llm"]["dtype"] == setup.model_cfg["img"]["dtype"] == "bfloat16"
  assert {x.dtype for x in jax.tree.leaves(setup.abstract_state["train"])} == {jnp.dtype(jnp.float32)}
  assert {x.dtype for x in jax.tree.leaves(setup.abstract_state["opt"]) if x.ndim} == {jnp.dtype(jnp.float32)}
  assert {x.dtype for x in jax.tree.leaves(setup.abstract_frozen)} == {jnp.dtype(jnp.bfloat16)}


@pytest.mark.parametrize("key", ["dtype", "remat_policy"])
@pytest.mark.parametrize("tower", ["llm", "img"])
def test_a_key_set_in_two_places_is_an_error(tmp_path, key, tower):
  path = tmp_path / "cfg.py"
  path.write_text(f"from components.finetune.config import defaults\n\ndef get_config(arg=None):\n"
                  f"  c = defaults()\n  c.model_overrides.{tower}.{key} = 'bfloat16'\n  return c\n")
  own = "compute_dtype" if key == "dtype" else "remat_policy"
  with pytest.raises(ValueError, match=rf"line 5: '{key}' is not settable: set config\.{own}"):
    config_lib.load_config(str(path))
  with pytest.raises(ValueError, match=rf"'model_overrides\.{tower}\.{key}' is not settable: set config\.{own}"):
    config_lib.load_config(TINY_CONFIG, [f"model_overrides.{tower}.{key}=bfloat16"])


def test_compute_dtype_values():
  with pytest.raises(ValueError, match="compute_dtype=''"):
    config_lib.load_config(TINY_CONFIG, ["compute_dtype="])
  assert config_lib.defaults().compute_dtype == "bfloat16" and config_lib.defaults().remat_policy == "auto"


def test_bf16_agrees_with_f32_within_bf16_rounding(hlo_dot_types):
  """Same weights and batch, compute_dtype float32 vs bfloat16. Tolerance from bf16's epsilon (2^-7, twice
  the unit roundoff): a bf16 matmul rounds both inputs and its output, about eps relative error each, and
  independent roundings along a chain of n matmuls add up like sqrt(n) (n: the bf16 dot_generals of the
  forward pass, an upper bound on the chain). The loss, a mean over many tokens, stays within eps."""
  eps = float(jnp.finfo(jnp.bfloat16).eps)
  results = {}
  for dtype in ("float32", "bfloat16"):
    config = config_lib.load_config(TINY_CONFIG, [f"compute_dtype={dtype}", "batch_size=4"])
    mesh = sharding.make_mesh(1, 1, devices=jax.devices()[:1])
    setup = state_lib.build(config, mesh, total_steps=10)
    state, frozen = state_lib.init_state(setup, config)
    params = step_lib.model_params(state["train"], frozen, lora_scale=1.0)
    rng = np.random.default_rng(0)
    size = setup.model_cfg["img"].get("image_size", 56)
    batch = {"image": rng.uniform(-1, 1, (4, size, size, 3)).astype(np.float32),
             "text": rng.integers(4, 2048, (4, config.text_len + 1)).astype(np.int32),
             "mask_ar": np.tile((np.arange(config.text_len + 1) >= 6).astype(np.int32), (4, 1))}
    batch["mask_loss"] = batch["mask_ar"]
    forward = jax.jit(lambda p, b: setup.model.apply({"params": p}, b["image"], b["text"][:, :-1],
                                                     b["mask_ar"][:, :-1])[0])
    n_dots = len(hlo_dot_types(forward.lower(params, batch).as_text()))
    loss = jax.jit(lambda p, b: step_lib.batch_loss(setup.model, p, b, None, train=False).mean())(params, batch)
    results[dtype] = np.asarray(forward(params, batch)), float(loss), n_dots
  (logits32, loss32, _), (logits16, loss16, n_dots) = results["float32"], results["bfloat16"]
  rel = np.abs(logits16 - logits32).max() / np.abs(logits32).max()
  assert 0 < rel <= np.sqrt(n_dots) * eps, (rel, n_dots)  # > 0: the matmuls really ran in bf16
  assert abs(loss16 - loss32) <= eps * abs(loss32), (loss16, loss32)
