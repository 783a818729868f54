"""The KFP component: same core as the CLI, no credential parameters, nothing secret compiled in."""
import json

import yaml
from kfp import compiler
from kfp.dsl import Model

from components.download.component import _download_model_dir, download_model_dir


def test_component_body_fills_the_artifact(tiny_files, tmp_path):
  src = tmp_path / "src"
  src.mkdir()
  (src / "tiny.npz").write_bytes(tiny_files["npz"])
  (src / "tokenizer.model").write_bytes(tiny_files["tokenizer"])
  artifact = Model(uri=str(tmp_path / "artifact"))
  _download_model_dir("tiny-v2", artifact, source=str(src / "tiny.npz"))
  assert artifact.metadata == {"name": "tiny-v2", "checkpoint": "tiny.npz", "source": str(src / "tiny.npz")}
  assert json.loads((tmp_path / "artifact" / "model.json").read_text())["checkpoint"] == "tiny.npz"
  assert (tmp_path / "artifact" / "tokenizer.model").read_bytes() == tiny_files["tokenizer"]


def test_compiled_component_has_no_secrets(tmp_path, monkeypatch):
  secrets = {"KAGGLE_KEY": "kaggle-compile-s3cret", "HF_TOKEN": "hf_compile_s3cret", "KAGGLE_API_TOKEN": "kgat_s3cret"}
  for k, v in secrets.items():
    monkeypatch.setenv(k, v)
  path = tmp_path / "download.yaml"
  compiler.Compiler().compile(download_model_dir, str(path))
  text = path.read_text()
  assert [v for v in secrets.values() if v in text] == []
  spec = yaml.safe_load(text)
  inputs = set(spec["root"]["inputDefinitions"]["parameters"])
  assert inputs == {"model", "source", "tokenizer", "dtype", "kaggle_credentials_path", "hf_credentials_path", "task",
                    "vqvae"}
  assert "run_download" in text  # the body calls the core, like the CLI
