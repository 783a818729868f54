"""Named configs: every one builds (shapes only), released sizes have the published parameter counts and
big_vision's exact tree (PALIGEMMA.md §1-2), and names resolve or fail clearly."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from components.paligemma import Model, configs, flatten_params


def abstract_params(model_cfg):
  size = configs.image_size(model_cfg)
  image = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  text = jax.ShapeDtypeStruct((1, 3), jnp.int32)
  variables = jax.eval_shape(Model(**model_cfg).init, jax.random.PRNGKey(0), image, text, text)
  return {name: tuple(x.shape) for name, x in flatten_params(variables["params"]).items()}


def count(shapes):
  return sum(int(np.prod(s)) for s in shapes.values())


@pytest.mark.parametrize("name, expected", [
    ("paligemma-3b-pt-224", 2_923_335_408),
    ("paligemma2-3b-pt-224", 3_032_094_960),
    ("paligemma2-10b-pt-224", 9_662_409_456),
    ("paligemma2-28b-pt-224", 27_650_192_112),
])
def test_published_parameter_counts(name, expected):
  assert count(abstract_params(configs.model_config(name))) == expected


def test_paligemma_3b_tree_is_big_vision_layout():
  shapes = abstract_params(configs.model_config("paligemma-3b-pt-224"))
  blk = "img/Transformer/encoderblock/"
  mha = blk + "MultiHeadDotProductAttention_0/"
  expected = {
      "img/embedding/kernel": (14, 14, 3, 1152), "img/embedding/bias": (1152,),
      "img/pos_embedding": (1, 256, 1152),
      blk + "LayerNorm_0/scale": (27, 1152), blk + "LayerNorm_0/bias": (27, 1152),
      blk + "LayerNorm_1/scale": (27, 1152), blk + "LayerNorm_1/bias": (27, 1152),
      blk + "MlpBlock_0/Dense_0/kernel": (27, 1152, 4304), blk + "MlpBlock_0/Dense_0/bias": (27, 4304),
      blk + "MlpBlock_0/Dense_1/kernel": (27, 4304, 1152), blk + "MlpBlock_0/Dense_1/bias": (27, 1152),
      **{mha + f"{p}/kernel": (27, 1152, 16, 72) for p in ("query", "key", "value")},
      **{mha + f"{p}/bias": (27, 16, 72) for p in ("query", "key", "value")},
      mha + "out/kernel": (27, 16, 72, 1152), mha + "out/bias": (27, 1152),
      "img/Transformer/encoder_norm/scale": (1152,), "img/Transformer/encoder_norm/bias": (1152,),
      "img/head/kernel": (1152, 2048), "img/head/bias": (2048,),
      "llm/embedder/input_embedding": (257_152, 2048),
      "llm/layers/attn/q_einsum/w": (18, 8, 2048, 256),
      "llm/layers/attn/kv_einsum/w": (18, 2, 1, 2048, 256),
      "llm/layers/attn/attn_vec_einsum/w": (18, 8, 256, 2048),
      "llm/layers/mlp/gating_einsum": (18, 2, 2048, 16_384),
      "llm/layers/mlp/linear": (18, 16_384, 2048),
      "llm/layers/pre_attention_norm/scale": (18, 2048), "llm/layers/pre_ffw_norm/scale": (18, 2048),
      "llm/final_norm/scale": (2048,),
  }
  assert len(expected) == 32
  assert shapes == expected


def test_paligemma2_3b_tree_adds_post_norms_and_gqa():
  shapes = abstract_params(configs.model_config("paligemma2-3b-pt-224"))
  assert len(shapes) == 34
  assert shapes["img/head/kernel"] == (1152, 2304)
  assert shapes["llm/layers/attn/q_einsum/w"] == (26, 8, 2304, 256)
  assert shapes["llm/layers/attn/kv_einsum/w"] == (26, 2, 4, 2304, 256)
  assert shapes["llm/layers/mlp/gating_einsum"] == (26, 2, 2304, 9216)
  assert shapes["llm/layers/post_attention_norm/scale"] == (26, 2304)
  assert shapes["llm/layers/post_ffw_norm/scale"] == (26, 2304)


def test_mha_uses_single_qkv_einsum():
  shapes = abstract_params(configs.model_config("tiny-mha"))
  assert shapes["llm/layers/attn/qkv_einsum/w"] == (2, 3, 4, 64, 16)
  assert not any("q_einsum" in n or "kv_einsum/" in n for n in shapes if "qkv" not in n)


@pytest.mark.parametrize("name", configs.released_names() + list(configs.SMALL_CONFIGS))
def test_every_named_config_builds(name):
  cfg = configs.model_config(name)
  assert json.loads(json.dumps(cfg)) == cfg  # model.json stores it as is.
  shapes = abstract_params(cfg)
  img = configs.resolve_img(cfg["img"])
  assert shapes["img/pos_embedding"] == (1, (img["image_size"] // img["patch_size"]) ** 2, img["width"])
  assert shapes["llm/embedder/input_embedding"][0] == configs.resolve_llm(cfg["llm"])["vocab_size"]


def test_released_resolutions_and_variants():
  assert configs.image_size(configs.model_config("paligemma2-10b-mix-448")) == 448
  assert configs.image_size(configs.model_config("paligemma-3b-pt-896")) == 896
  assert configs.model_config("paligemma2-28b-pt-224")["llm"]["variant"] == "gemma2_27b"
  llm = configs.resolve_llm(configs.model_config("paligemma2-3b-pt-224")["llm"])
  assert (llm["attn_logits_softcap"], llm["final_logits_softcap"], llm["post_norms"]) == (50.0, 30.0, True)
  assert configs.resolve_llm({"variant": "gemma2_27b"})["query_pre_attn_norm"] == "rsqrt_emb_per_head"
  assert configs.resolve_llm({"variant": "gemma_2b"})["final_logits_softcap"] == 0.0


def test_fine_tuned_names_resolve_by_size_and_resolution():
  assert configs.model_config("paligemma-3b-ft-docvqa-896") == configs.model_config("paligemma-3b-pt-896")
  assert configs.model_config("paligemma2-10b-ft-docci-448") == configs.model_config("paligemma2-10b-pt-448")
  assert configs.model_config("paligemma-3b-ft-refcoco-seg-224") == configs.model_config("paligemma-3b-pt-224")


@pytest.mark.parametrize("bad", ["paligemma-3b-mix-896", "paligemma-10b-pt-224", "paligemma2-3b-pt-512",
                                 "paligemma2-3b-ft-docci-300", "tiny"])
def test_unknown_names_fail_listing_known_ones(bad):
  with pytest.raises(ValueError, match="paligemma2-28b-pt-896") as e:
    configs.model_config(bad)
  assert repr(bad) in str(e.value) and "tiny-v2" in str(e.value)


def test_fixture_configs_match_the_fixture_readme():
  v1, mha, v2 = (configs.resolve_llm(configs.model_config(n)["llm"]) for n in ("tiny-v1", "tiny-mha", "tiny-v2"))
  for llm in (v1, mha, v2):
    assert (llm["vocab_size"], llm["width"], llm["depth"], llm["mlp_dim"], llm["num_heads"], llm["head_dim"]) == (
        300, 64, 2, 128, 4, 16)
  assert (v1["num_kv_heads"], mha["num_kv_heads"], v2["num_kv_heads"]) == (1, 4, 2)
  assert not v1["post_norms"] and v2["post_norms"]
  img = configs.resolve_img(configs.model_config("tiny-v2")["img"])
  assert (img["width"], img["depth"], img["mlp_dim"], img["num_heads"], img["patch_size"], img["image_size"]) == (
      32, 2, 128, 2, 14, 56)
  small = configs.model_config("small-v2")
  assert configs.resolve_llm(small["llm"])["vocab_size"] == 2048 and configs.image_size(small) == 112


def test_bad_overrides_fail_clearly():
  with pytest.raises(ValueError, match="unknown keys \\['widht'\\]"):
    configs.resolve_llm({"variant": "gemma_2b", "widht": 3})
  with pytest.raises(ValueError, match="variant"):
    configs.resolve_img({"variant": "B/16"})
  with pytest.raises(ValueError, match="multiple of img.patch_size"):
    configs.image_size({"img": {"variant": "So400m/14", "image_size": 100}})
