"""A checkpoint describes itself: the configuration inferred from an .npz's array shapes (headers only)."""
import logging
import uuid

import fsspec
import numpy as np
import pytest

from components.paligemma import configs
from components.paligemma.checkpoint import CheckpointError, infer_config, load, param_shapes, read_shapes, save

RELEASED_PT = [n for n in configs.released_names() if "-pt-" in n]


@pytest.mark.parametrize("name", list(configs.SMALL_CONFIGS))
def test_small_configs_are_recognised_by_name(name):
  got = configs.infer_model_config(param_shapes(configs.model_config(name)))
  assert got == (name, configs.model_config(name))


@pytest.mark.parametrize("name", RELEASED_PT)
def test_released_configs_from_shapes_alone(name):
  """Full-size configurations from `param_shapes` (no data): geometry, soft caps and 27B's query scale."""
  shapes = param_shapes(configs.model_config(name))
  family, size, _, res = name.split("-")
  got = configs.infer_model_config(shapes)
  assert got == (f"{family}-{size}-{res}", configs.model_config(name))  # pt or mix: shapes cannot tell
  llm = configs.resolve_llm(got.model_cfg["llm"])
  v2 = family == "paligemma2"
  assert (llm["attn_logits_softcap"], llm["final_logits_softcap"], llm["post_norms"]) == (
      (50.0, 30.0, True) if v2 else (0.0, 0.0, False))
  assert llm["query_pre_attn_norm"] == ("rsqrt_emb_per_head" if size == "28b" else "rsqrt_head_dim")
  # The published file name gives the released name, when the shapes are that model's.
  mix = name.replace("-pt-", "-mix-")
  if mix in configs.released_names():
    assert configs.infer_model_config(shapes, file_name=f"gs://b/{mix}.b16.npz").name == mix
  other = "paligemma2-3b-pt-896" if name != "paligemma2-3b-pt-896" else "paligemma2-3b-pt-224"
  assert configs.infer_model_config(shapes, file_name=f"{other}.npz").name == f"{family}-{size}-{res}"


def test_big_vision_files_read_back_as_their_configs(bigvision_fixtures):
  """big_vision's own checkpoints (../shared/fixtures/bigvision), through the header reader."""
  for fixture, name in (("tiny_v1", "tiny-v1"), ("tiny_mha", "tiny-mha"), ("tiny_v2", "tiny-v2")):
    path = bigvision_fixtures / f"{fixture}.params.npz"
    assert infer_config(path) == (name, configs.model_config(name))


def test_shapes_come_from_headers_only_local_and_remote(tmp_path, headers_only_npz):
  shapes = param_shapes(configs.model_config("paligemma2-28b-pt-896"))
  path = tmp_path / "ckpt.npz"
  headers_only_npz(path, shapes, descr="|V2")  # bf16 as numpy stores it; a `params/` prefix
  assert read_shapes(str(path)) == shapes
  with pytest.raises(CheckpointError, match="cannot be read"):  # there is no data to read
    load(str(path))
  mem = fsspec.filesystem("memory")
  remote = f"memory://infer-{uuid.uuid4().hex[:8]}/ckpt.npz"
  mem.pipe(remote, path.read_bytes())
  try:
    assert infer_config(remote) == ("paligemma2-28b-896", configs.model_config("paligemma2-28b-pt-896"))
  finally:
    mem.rm(remote)


def test_a_saved_checkpoint_in_any_dtype(tmp_path):
  cfg = configs.model_config("tiny-v2")
  rng = np.random.default_rng(0)
  params = {k: rng.standard_normal(s).astype(np.float32) for k, s in param_shapes(cfg).items()}
  save(params, tmp_path / "m.npz", dtype="bfloat16")
  assert infer_config(tmp_path / "m.npz") == ("tiny-v2", cfg)


def test_other_geometries_get_their_family_settings_and_a_descriptive_name(caplog):
  cfg = configs.model_config("tiny-v2")
  cfg["llm"].update(vocab_size=512, depth=3)
  cfg["img"].update(image_size=84)
  with caplog.at_level(logging.WARNING):
    got = configs.infer_model_config(param_shapes(cfg), file_name="mine.npz")
  assert got.name == "paligemma2-custom-w64-d3-v512-img32x2-84px"
  assert configs.resolve_llm(got.model_cfg["llm"]) == configs.resolve_llm(cfg["llm"])
  assert configs.resolve_img(got.model_cfg["img"]) == configs.resolve_img(cfg["img"])
  assert "mine.npz" in caplog.text and "soft cap 50" in caplog.text
  # A released LLM geometry with another vocabulary keeps that variant (and its settings): no guess to warn of.
  cfg = configs.model_config("paligemma2-28b-pt-224")
  cfg["llm"]["vocab_size"] = 1024
  caplog.clear()
  got = configs.infer_model_config(param_shapes(cfg))
  assert got.model_cfg["llm"] == {"variant": "gemma2_27b", "vocab_size": 1024} and not caplog.text


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("llm/final_norm/scale"), "missing array 'llm/final_norm/scale'"),
    (lambda s: s.update({"llm/extra": (3,)}), "unexpected array 'llm/extra'"),
    (lambda s: s.update({"llm/layers/mlp/linear": (2, 100, 64)}), r"'llm/layers/mlp/linear' has shape \(2, 100, 64\)"),
    (lambda s: s.update({"img/pos_embedding": (1, 15, 32)}), "15 positions, not a square grid"),
    (lambda s: s.pop("img/embedding/kernel"), "'img/embedding/kernel' is missing"),
    (lambda s: s.update({"llm/embedder/input_embedding": (300,)}), "has 2 axes there"),
])
def test_shapes_of_no_paligemma_are_an_error_naming_the_file(tmp_path, headers_only_npz, change, message):
  shapes = param_shapes(configs.model_config("tiny-v1"))
  change(shapes)
  path = tmp_path / "odd.npz"
  headers_only_npz(path, shapes)
  with pytest.raises(CheckpointError, match=message) as e:
    infer_config(str(path))
  assert str(e.value).startswith(f"{path}: cannot tell which PaliGemma configuration it holds")


def test_a_file_that_is_no_npz_is_an_error_naming_it(tmp_path):
  path = tmp_path / "page.npz"
  path.write_text("<html>sign in</html>")
  with pytest.raises(CheckpointError, match=f"{path} is not a readable .npz"):
    infer_config(str(path))
