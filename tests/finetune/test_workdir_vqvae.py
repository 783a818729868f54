"""A segmentation model's mask codec travels into the finetune workdir: the base model's model.json names it
(`vqvae`, as download --vqvae writes it), the workdir's model.json records where it is, and evaluate/export
reading the workdir find it there (components.common.checkpoints.find_vqvae)."""
import json
import os

import pytest

from components.common.checkpoints import find_vqvae, read_model_json, resolve_checkpoint
from components.finetune import config as config_lib, params as params_lib, trainer
from _finetune_helpers import TINY_CONFIG


@pytest.fixture
def model_dir(tmp_path):
  """A model directory's files as far as resolve_model reads them (model.json; weights are not opened)."""
  from components import paligemma

  root = tmp_path / "model"
  root.mkdir()
  cfg = paligemma.configs.model_config("tiny-v2")
  (root / "model.json").write_text(json.dumps({**cfg, "name": "tiny-seg", "checkpoint": "base.npz",
                                               "vqvae": "vae-oid.npz"}))
  return root


@pytest.mark.parametrize("given", ["directory", "npz"])
def test_the_base_models_codec_is_recorded_in_the_workdir(model_dir, tmp_path, monkeypatch, given):
  monkeypatch.chdir(model_dir.parent)  # a relative checkpoint path: the workdir records an absolute codec path
  checkpoint = "model" if given == "directory" else os.path.join("model", "base.npz")
  config = config_lib.load_config(TINY_CONFIG, [f"checkpoint={checkpoint}"])
  source = params_lib.resolve_model(config)
  assert source.vqvae == str(model_dir / "vae-oid.npz")

  workdir = tmp_path / "workdir"
  trainer._write_run_files(str(workdir), config, source, b"tokenizer")  # noqa: SLF001 (what the trainer writes first)
  assert json.loads((workdir / "model.json").read_text())["vqvae"] == str(model_dir / "vae-oid.npz")
  resolved = resolve_checkpoint(str(workdir))
  assert resolved.kind == "workdir" and find_vqvae(resolved, read_model_json(resolved)) == str(model_dir / "vae-oid.npz")


def test_a_model_without_codec_records_none(model_dir, tmp_path):
  meta = json.loads((model_dir / "model.json").read_text())
  (model_dir / "model.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "vqvae"}))
  source = params_lib.resolve_model(config_lib.load_config(TINY_CONFIG, [f"checkpoint={model_dir}"]))
  assert source.vqvae is None
  trainer._write_run_files(str(tmp_path / "workdir"), config_lib.load_config(TINY_CONFIG), source, b"t")  # noqa: SLF001
  assert "vqvae" not in json.loads((tmp_path / "workdir" / "model.json").read_text())


def test_random_init_has_no_codec():
  assert params_lib.resolve_model(config_lib.load_config(TINY_CONFIG)).vqvae is None
