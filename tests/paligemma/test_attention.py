"""Attention implementations: the fused paths agree with the reference einsum on CPU (jax's xla path of
`jax.nn.dot_product_attention`; splash in Pallas' interpreter), and "auto" follows the backend."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from components.paligemma import Model, attention, configs, load
from components.paligemma import sharding as model_sharding


def _fixture(bigvision_fixtures, name):
  cfg = configs.model_config(name.replace("_", "-"))
  params = load(str(bigvision_fixtures / f"{name}.params.npz"), cfg)
  return cfg, params, dict(np.load(bigvision_fixtures / f"{name}.io.npz"))


def _with(cfg, **tower_values):
  return {tower: {**cfg[tower], **tower_values} for tower in ("llm", "img")}


def _logits(cfg, params, io):
  model = Model(**cfg)
  return jax.jit(lambda p: model.apply({"params": p}, io["image"], io["text"][:, :-1], io["mask_ar"][:, :-1])[0])(
      params)


def test_auto_is_the_einsum_reference_on_cpu(bigvision_fixtures):
  cfg, params, io = _fixture(bigvision_fixtures, "tiny_v2")
  chosen = configs.choose_attention(cfg, "cpu")
  assert chosen["llm"]["attention"] == chosen["img"]["attention"] == "einsum"
  np.testing.assert_array_equal(_logits(cfg, params, io), _logits(_with(cfg, attention="einsum"), params, io))


@pytest.mark.parametrize("dtype, atol", [("float32", 1e-5), ("bfloat16", 0.05)])
def test_xla_fused_path_agrees_with_einsum(bigvision_fixtures, dtype, atol):
  # Gemma 1 (no soft-cap) and SigLIP: jax.nn.dot_product_attention, the API cuDNN sits behind on GPU.
  cfg, params, io = _fixture(bigvision_fixtures, "tiny_v1")
  ref = _logits(_with(cfg, attention="einsum", dtype=dtype), params, io)
  fused = _logits(_with(cfg, attention="xla", dtype=dtype), params, io)
  np.testing.assert_allclose(fused, ref, atol=atol, rtol=0)
  np.testing.assert_array_equal(fused.argmax(-1), ref.argmax(-1))


def _qkv(seed=0, b=2, t=40, n=4, k=2, h=16):
  rng = np.random.default_rng(seed)
  q = jnp.asarray(rng.standard_normal((b, t, n, h)), jnp.float32) * 0.5
  kv = [jnp.asarray(rng.standard_normal((b, t, k, h)), jnp.float32) for _ in range(2)]
  prefix = np.array([7, 25])[:, None, None]
  i = np.arange(t)
  mask = jnp.asarray((i[None, None, :] <= i[None, :, None]) | ((i[None, None, :] < prefix) & (i[None, :, None] < prefix)))
  return q, *kv, mask


@pytest.mark.slow
def test_splash_interpreted_agrees_with_einsum_with_soft_cap_and_gradients():
  """The TPU kernel (run by Pallas' interpreter on this CPU): per-example prefix-LM masks, GQA, Gemma 2's
  soft-cap, sequence padded to 128; forward and gradients."""
  q, k, v, mask = _qkv()

  def loss(impl):
    return lambda q, k, v: jnp.sum(attention.attend(q, k, v, mask, impl=impl, dtype=jnp.float32, softcap=5.0) ** 2)

  ref = attention.attend(q, k, v, mask, impl="einsum", dtype=jnp.float32, softcap=5.0)
  out = jax.jit(lambda q, k, v: attention.attend(q, k, v, mask, impl="splash", dtype=jnp.float32, softcap=5.0))(
      q, k, v)
  np.testing.assert_allclose(out, ref, atol=2e-5, rtol=0)
  # Under a mesh the kernel runs per batch shard (shard_map: XLA cannot partition a Pallas call itself),
  # over the mesh axes the logical batch axis maps to.
  mesh = jax.make_mesh((2,), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:2])
  shard = lambda x: jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
  with jax.set_mesh(mesh), nn.logical_axis_rules([(model_sharding.BATCH, ("data",))]):
    sharded = jax.jit(lambda q, k, v, m: attention.attend(q, k, v, m, impl="splash", dtype=jnp.float32, softcap=5.0))(
        *map(shard, (q, k, v, mask)))
  np.testing.assert_allclose(sharded, ref, atol=2e-5, rtol=0)
  grads_ref = jax.grad(loss("einsum"), argnums=(0, 1, 2))(q, k, v)
  grads = jax.jit(jax.grad(loss("splash"), argnums=(0, 1, 2)))(q, k, v)
  for g, r in zip(grads, grads_ref):
    np.testing.assert_allclose(g, r, atol=1e-4 * float(jnp.abs(r).max()), rtol=0)


def test_soft_cap_needs_a_kernel_that_applies_it():
  q, k, v, mask = _qkv()
  with pytest.raises(ValueError, match="soft-cap"):
    attention.attend(q, k, v, mask, impl="xla", dtype=jnp.float32, softcap=50.0)
  with pytest.raises(ValueError, match="llm.attention='cudnn' cannot apply the attention soft-cap"):
    attention.choose("cudnn", platform="gpu", tower="llm", dtype="bfloat16", softcap=50.0, head_dim=256)
  with pytest.raises(ValueError, match="llm.attention='flash'"):
    configs.resolve_llm({"variant": "gemma2_2b", "attention": "flash"})


@pytest.mark.parametrize("platform, tower, dtype, softcap, head_dim, kind, expected", [
    ("cpu", "llm", "bfloat16", 0.0, 256, "cpu", "einsum"),
    ("gpu", "img", "bfloat16", 0.0, 72, "NVIDIA H200", "cudnn"),  # SigLIP So400m: 1152 / 16 heads
    ("gpu", "llm", "bfloat16", 0.0, 256, "NVIDIA H200", "cudnn"),  # Gemma 1 on Hopper
    ("gpu", "llm", "bfloat16", 0.0, 256, "NVIDIA A100-SXM4-80GB", "einsum"),  # cuDNN: head dim <= 128 before Hopper
    ("gpu", "llm", "bfloat16", 50.0, 256, "NVIDIA H200", "einsum"),  # Gemma 2: no soft-capping cuDNN kernel
    ("gpu", "img", "float32", 0.0, 72, "NVIDIA H200", "einsum"),  # cuDNN: bf16/f16 only
    ("tpu", "llm", "bfloat16", 50.0, 256, "TPU v5 lite", "splash"),
    ("tpu", "llm", "bfloat16", 0.0, 16, "TPU v5 lite", "einsum"),  # head dim short of the 128 lanes
    ("tpu", "img", "bfloat16", 0.0, 72, "TPU v5 lite", "einsum"),
])
def test_auto_follows_the_backend(platform, tower, dtype, softcap, head_dim, kind, expected):
  assert attention.choose("auto", platform=platform, tower=tower, dtype=dtype, softcap=softcap, head_dim=head_dim,
                          device_kind=kind) == expected
  assert attention.choose("einsum", platform=platform, tower=tower, dtype=dtype, head_dim=head_dim) == "einsum"


def test_released_models_choose_per_backend():
  cfg = configs.model_config("paligemma2-3b-pt-224")
  cfg = {t: {**cfg[t], "dtype": "bfloat16"} for t in cfg}
  gpu = configs.choose_attention(cfg, "gpu", "NVIDIA H200")
  tpu = configs.choose_attention(cfg, "tpu", "TPU v5 lite")
  assert (gpu["img"]["attention"], gpu["llm"]["attention"]) == ("cudnn", "einsum")
  assert (tpu["img"]["attention"], tpu["llm"]["attention"]) == ("einsum", "splash")
  explicit = configs.choose_attention({"llm": {**cfg["llm"], "attention": "einsum"}, "img": cfg["img"]}, "tpu")
  assert explicit["llm"]["attention"] == "einsum"
