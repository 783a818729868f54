"""`config.checkpoint=x.npz` with no model.json beside it: the model is what the array shapes say."""
import json
import os

import numpy as np
import pytest

from components import paligemma
from components.finetune import config as config_lib, load_trained_params, params as params_lib, train
from _finetune_helpers import TINY_CONFIG

INFERRED = "paligemma2-custom-w64-d2-v2048-img32x2-56px"  # tiny-v2's geometry with the small tokenizer's vocab


@pytest.fixture(scope="module")
def bare_npz(tmp_path_factory):
  cfg = paligemma.configs.model_config("tiny-v2")
  cfg["llm"]["vocab_size"] = 2048
  rng = np.random.default_rng(0)
  params = {k: (0.05 * rng.standard_normal(s)).astype(np.float32)
            for k, s in paligemma.checkpoint.param_shapes(cfg).items()}
  path = tmp_path_factory.mktemp("bare") / "weights.npz"
  paligemma.save(params, str(path))
  return str(path), cfg, params


def test_resolve_model_infers_the_configuration(bare_npz, tokenizer_path):
  path, cfg, _ = bare_npz
  assert not os.path.exists(os.path.join(os.path.dirname(path), "model.json"))
  config = config_lib.load_config(TINY_CONFIG, [f"checkpoint={path}", f"tokenizer={tokenizer_path}",
                                                "model_name=paligemma2-3b-pt-224"])  # a name that would not fit
  source = params_lib.resolve_model(config)
  assert source.name == INFERRED and source.checkpoint == path
  want = paligemma.configs.resolve_llm({**cfg["llm"], "final_logits_softcap": 0.0, "remat_policy": "none"})
  assert paligemma.configs.resolve_llm(source.model_cfg["llm"]) == want
  assert paligemma.configs.resolve_img(source.model_cfg["img"]) == paligemma.configs.resolve_img(
      {**cfg["img"], "remat_policy": "none"})


@pytest.mark.slow
def test_training_from_a_bare_npz_and_loading_it_back(bare_npz, dataset_dir, tokenizer_path, tmp_path):
  path, _, params = bare_npz
  config = config_lib.load_config(TINY_CONFIG, [f"checkpoint={path}", f"tokenizer={tokenizer_path}",
                                                f"data_dir={dataset_dir}", "total_steps=2", "eval_every=0",
                                                "checkpoint_every=2", "valid_split=", "trainable=llm/layers/attn/.*"])
  train(config, str(tmp_path / "run"))
  model_json = json.loads((tmp_path / "run" / "model.json").read_text())
  assert model_json["name"] == INFERRED and model_json["base_checkpoint"] == path
  tuned, _ = load_trained_params(str(tmp_path / "run"))  # frozen weights re-read from the bare .npz
  flat = paligemma.flatten_params(tuned)
  assert np.array_equal(flat["img/head/kernel"], params["img/head/kernel"])
  loaded, model_cfg = load_trained_params(path)  # the .npz itself
  assert np.array_equal(paligemma.flatten_params(loaded)["llm/final_norm/scale"], params["llm/final_norm/scale"])
  assert model_cfg["llm"]["vocab_size"] == 2048
