"""The forward pass against big_vision's own outputs, and the model's options (dtype, scan, remat,
dropout, sharding hints, 27B query scaling)."""
import functools
import json

import jax
import jax.numpy as jnp
import flax.linen as nn
import ml_dtypes
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from components.paligemma import Model, configs, load, sharding

FIXTURES = ["tiny_v1", "tiny_mha", "tiny_v2"]


def fixture(bigvision_fixtures, name):
  cfg = configs.model_config(name.replace("_", "-"))
  params = load(str(bigvision_fixtures / f"{name}.params.npz"), cfg)
  return cfg, params, dict(np.load(bigvision_fixtures / f"{name}.io.npz"))


@functools.lru_cache
def _jitted_forward(cfg_json, train):
  model = Model(**json.loads(cfg_json))
  return jax.jit(lambda p, image, text, mask_ar, rng: model.apply(
      {"params": p}, image, text, mask_ar, train=train, rngs={"dropout": rng}))


def forward(cfg, params, io, train=False, rng=None):
  """Model(**cfg) on the fixture's training example (text[:, :-1], as big_vision's `_logits`)."""
  rng = jax.random.PRNGKey(0) if rng is None else rng
  fn = _jitted_forward(json.dumps(cfg, sort_keys=True), train)
  return fn(params, io["image"], io["text"][:, :-1], io["mask_ar"][:, :-1], rng)


def with_overrides(cfg, **kw):
  return {"llm": {**cfg["llm"], **kw}, "img": {**cfg["img"], **{k: v for k, v in kw.items() if k in
                                                                  ("scan", "remat_policy", "dtype")}}}


@pytest.mark.parametrize("name", FIXTURES)
def test_matches_big_vision(bigvision_fixtures, name):
  cfg, params, io = fixture(bigvision_fixtures, name)
  text_logits, aux = forward(cfg, params, io)
  assert text_logits.dtype == jnp.float32 and text_logits.shape == (2, 12, 300)
  np.testing.assert_allclose(text_logits, io["text_logits"], atol=1e-4, rtol=0)
  np.testing.assert_allclose(aux["img/zimg"], io["zimg"], atol=1e-4, rtol=0)
  np.testing.assert_allclose(aux["llm/pre_logits"], io["llm_pre_logits"], atol=1e-4, rtol=0)
  np.testing.assert_array_equal(aux["attn_mask"], io["attn_mask"])


def test_bf16_compute_close_to_f32():
  # Initialised (well-conditioned) weights: the fixtures' std-0.3 random weights amplify any rounding ~10x.
  cfg = configs.model_config("tiny-v2")
  rng = np.random.default_rng(0)
  image = rng.uniform(-1, 1, (2, 56, 56, 3)).astype(np.float32)
  text = rng.integers(3, 300, (2, 12)).astype(np.int32)
  mask_ar = np.array([[0] * 5 + [1] * 7] * 2, np.int32)
  params = Model(**cfg).init(jax.random.PRNGKey(0), image, text, mask_ar)["params"]
  io = {"image": image, "text": np.pad(text, ((0, 0), (0, 1))), "mask_ar": np.pad(mask_ar, ((0, 0), (0, 1)))}
  ref, ref_aux = forward(cfg, params, io)
  out, aux = forward(with_overrides(cfg, dtype="bfloat16"), params, io)
  assert out.dtype == jnp.float32 and aux["llm/pre_logits"].dtype == jnp.float32  # residual stream stays f32
  for got, want in ((out, ref), (aux["img/zimg"], ref_aux["img/zimg"])):
    rel = float(jnp.abs(got - want).max() / jnp.abs(want).max())
    assert 0 < rel < 0.02, rel  # bf16 keeps ~3 significant digits; nonzero: the matmuls really ran in bf16
  np.testing.assert_array_equal(out.argmax(-1), ref.argmax(-1))


def test_bf16_weights_run_with_f32_activations(bigvision_fixtures):
  cfg, params, io = fixture(bigvision_fixtures, "tiny_v1")
  bf16 = jax.tree.map(lambda x: np.asarray(x).astype(ml_dtypes.bfloat16), params)
  upcast = jax.tree.map(lambda x: x.astype(np.float32), bf16)
  out, aux = forward(cfg, bf16, io)
  assert out.dtype == jnp.float32 and aux["img/zimg"].dtype == jnp.float32
  np.testing.assert_allclose(out, forward(cfg, upcast, io)[0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("overrides", [dict(scan=False), dict(remat_policy="none"), dict(remat_policy="dots_saveable")])
def test_scan_and_remat_options_keep_tree_and_outputs(bigvision_fixtures, overrides):
  cfg, params, io = fixture(bigvision_fixtures, "tiny_v2")
  out, _ = forward(with_overrides(cfg, **overrides), params, io)  # the fixture's stacked tree loads as is
  np.testing.assert_allclose(out, io["text_logits"], atol=1e-5, rtol=0)


def test_unknown_remat_policy_fails_clearly(bigvision_fixtures):
  cfg, params, io = fixture(bigvision_fixtures, "tiny_v1")
  with pytest.raises(ValueError, match="llm.remat_policy='nothing_savable'"):
    forward({"llm": {**cfg["llm"], "remat_policy": "nothing_savable"}, "img": cfg["img"]}, params, io)
  with pytest.raises(ValueError, match="img.remat_policy='nothing_savable'"):
    forward({"llm": cfg["llm"], "img": {**cfg["img"], "remat_policy": "nothing_savable"}}, params, io)


def test_dropout_only_in_training_and_seeded(bigvision_fixtures):
  cfg, params, io = fixture(bigvision_fixtures, "tiny_v2")
  cfg = {"llm": {**cfg["llm"], "dropout": 0.5}, "img": cfg["img"]}
  np.testing.assert_allclose(forward(cfg, params, io)[0], io["text_logits"], atol=1e-5, rtol=0)
  a = forward(cfg, params, io, train=True, rng=jax.random.PRNGKey(1))[0]
  b = forward(cfg, params, io, train=True, rng=jax.random.PRNGKey(1))[0]
  c = forward(cfg, params, io, train=True, rng=jax.random.PRNGKey(2))[0]
  np.testing.assert_array_equal(a, b)
  assert float(jnp.abs(a - io["text_logits"]).max()) > 1e-3 and float(jnp.abs(a - c).max()) > 1e-3


def test_every_parameter_gets_a_gradient(bigvision_fixtures):
  cfg, params, io = fixture(bigvision_fixtures, "tiny_v2")  # remat + scan on, as the trainer runs it
  model = Model(**cfg)

  def loss(p):
    logits, _ = model.apply({"params": p}, io["image"], io["text"][:, :-1], io["mask_ar"][:, :-1])
    return jnp.mean(jax.nn.log_softmax(logits)[..., 0])

  grads = jax.jit(jax.grad(loss))(params)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.isfinite(g).all() and np.abs(g).max() > 0, jax.tree_util.keystr(path)


def test_gemma2_27b_scales_queries_by_width_per_head(bigvision_fixtures):
  # Same weights; the 27B variant scales q by (64/4)**-0.5 = 1/4 instead of head_dim**-0.5. Head dim 8 here,
  # so pre-scaling q_einsum by sqrt(8)/4 in the usual variant must give the very same model.
  cfg, params, io = fixture(bigvision_fixtures, "tiny_v2")
  qs = params["llm"]["layers"]["attn"]["q_einsum"]["w"]
  kv = params["llm"]["layers"]["attn"]["kv_einsum"]["w"]
  attn = params["llm"]["layers"]["attn"]
  small = dict(attn, q_einsum={"w": qs[..., :8]}, kv_einsum={"w": kv[..., :8]},
               attn_vec_einsum={"w": attn["attn_vec_einsum"]["w"][:, :, :8]})
  small_params = {"img": params["img"], "llm": {**params["llm"], "layers": {**params["llm"]["layers"], "attn": small}}}
  cfg27 = {"llm": {**cfg["llm"], "variant": "gemma2_27b", "head_dim": 8}, "img": cfg["img"]}
  cfg2 = {"llm": {**cfg["llm"], "head_dim": 8}, "img": cfg["img"]}
  rescaled = dict(small, q_einsum={"w": qs[..., :8] * (8**0.5 / 4)})
  rescaled_params = {"img": params["img"],
                     "llm": {**params["llm"], "layers": {**params["llm"]["layers"], "attn": rescaled}}}
  out27, _ = forward(cfg27, small_params, io)
  np.testing.assert_allclose(out27, forward(cfg2, rescaled_params, io)[0], atol=1e-5, rtol=0)
  assert float(jnp.abs(out27 - forward(cfg2, small_params, io)[0]).max()) > 1e-4  # the scale matters here


def test_wrong_image_size_fails_clearly(bigvision_fixtures):
  cfg, params, io = fixture(bigvision_fixtures, "tiny_v1")
  with pytest.raises(ValueError, match="img.image_size=56"):
    Model(**cfg).apply({"params": params}, np.zeros((1, 28, 28, 3), np.float32), io["text"][:1], io["mask_ar"][:1])


@pytest.mark.parametrize("rules", [True, False], ids=["logical-rules", "no-rules"])
def test_batch_sharding_hints_under_a_mesh(bigvision_fixtures, rules):
  """The layers constrain their activations' logical batch axis; the caller's rules put it on its mesh axes."""
  cfg, params, io = fixture(bigvision_fixtures, "tiny_v2")
  model = Model(**cfg)
  image = np.concatenate([io["image"]] * 4)
  text, mask_ar = (np.concatenate([io[k][:, :-1]] * 4) for k in ("text", "mask_ar"))
  fn = jax.jit(lambda p, *a: model.apply({"params": p}, *a)[0])
  plain = fn.lower(params, image, text, mask_ar).as_text()
  ref = fn(params, image, text, mask_ar)

  mesh = jax.make_mesh((4, 2), ("data", "fsdp"), axis_types=(AxisType.Auto,) * 2)
  shard = lambda x: jax.device_put(x, NamedSharding(mesh, PartitionSpec(("data", "fsdp"))))
  axis_rules = [(sharding.BATCH, ("data", "fsdp"))] if rules else []
  with jax.set_mesh(mesh), nn.logical_axis_rules(axis_rules):
    lowered = fn.lower(params, shard(image), shard(text), shard(mask_ar))
    out = fn(params, shard(image), shard(text), shard(mask_ar))
  constraints = lambda hlo: hlo.count("sharding_constraint") + hlo.count("@Sharding")  # Shardy or GSPMD
  assert constraints(plain) == 0  # no mesh: no hints
  if rules:
    assert constraints(lowered.as_text()) >= 3  # img block, llm block (x2)
    assert '"data", "fsdp"' in lowered.as_text() or "{devices=[8" in lowered.as_text()
  else:
    assert constraints(lowered.as_text()) == 0  # no rules: the model does not guess the caller's axes
  np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)
