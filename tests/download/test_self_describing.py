"""A bare checkpoint (no model name, no model.json beside it) downloads: its array shapes say which model
it is. On the GCS emulator, for every shipped small config (random weights) and every released
configuration (an .npz of headers only, built from `param_shapes`: no data)."""
import json

import numpy as np
import pytest

from components.download.__main__ import main
from components.paligemma import checkpoint, configs

TOKENIZER = "gs://weights/tokenizer.model"
RELEASED_PT = [n for n in configs.released_names() if "-pt-" in n]


@pytest.fixture
def gcs(servers, tiny_files):
  servers.put_gcs(TOKENIZER, tiny_files["tokenizer"])
  return servers


def random_npz(path, name):
  rng = np.random.default_rng(0)
  shapes = checkpoint.param_shapes(configs.model_config(name))
  return checkpoint.save({k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}, str(path),
                         dtype="bfloat16")


def check_model_dir(out, name, model_cfg, checkpoint_file="model.npz"):
  assert json.loads((out / "model.json").read_text()) == {**model_cfg, "name": name, "checkpoint": checkpoint_file}
  manifest = json.loads((out / "manifest.json").read_text())
  assert manifest["name"] == name and manifest["checkpoint"] == checkpoint_file
  assert set(manifest["files"]) == {checkpoint_file, "tokenizer.model", "model.json"}
  assert manifest["files"]["model.json"]["source"] == "generated"


@pytest.mark.parametrize("name", list(configs.SMALL_CONFIGS))
def test_small_config_from_a_bare_gs_npz(gcs, tmp_path, name):
  random_npz(tmp_path / "w.npz", name)
  gcs.put_gcs(f"gs://weights/{name}/model.npz", (tmp_path / "w.npz").read_bytes())
  out = tmp_path / "m"
  assert main(["--model", f"gs://weights/{name}/model.npz", "--tokenizer", TOKENIZER, "--output", str(out)]) == 0
  check_model_dir(out, name, configs.model_config(name))
  assert (out / "model.npz").read_bytes() == (tmp_path / "w.npz").read_bytes()


@pytest.mark.parametrize("name", RELEASED_PT)
def test_released_configuration_from_shapes_only(gcs, tmp_path, headers_only_npz, name):
  path = headers_only_npz(tmp_path / "w.npz", checkpoint.param_shapes(configs.model_config(name)), descr="|V2")
  gcs.put_gcs("gs://weights/big/model.npz", open(path, "rb").read())
  out = tmp_path / "m"
  assert main(["--model", "gs://weights/big/model.npz", "--tokenizer", TOKENIZER, "--output", str(out)]) == 0
  family, size, _, res = name.split("-")
  check_model_dir(out, f"{family}-{size}-{res}", configs.model_config(name))


def test_the_command_line_to_a_gs_output(gcs, tmp_path):
  """The user's command, as a subprocess: exit 0, model.json and manifest.json written (here to gs://)."""
  random_npz(tmp_path / "w.npz", "demo-v2")
  gcs.put_gcs("gs://weights/pg/model.npz", (tmp_path / "w.npz").read_bytes())
  gcs.gcs_client().create_bucket("models")
  run = gcs.run_cli("--model", "gs://weights/pg/model.npz", "--tokenizer", TOKENIZER, "--output", "gs://models/demo",
                    "--cache-dir", str(tmp_path / "staging"))
  assert run.returncode == 0, run.stderr
  assert "configuration inferred from its array shapes: demo-v2" in run.stderr
  bucket = gcs.gcs_client().bucket("models")
  model_json = json.loads(bucket.blob("demo/model.json").download_as_bytes())
  assert model_json == {**configs.model_config("demo-v2"), "name": "demo-v2", "checkpoint": "model.npz"}
  assert json.loads(bucket.blob("demo/manifest.json").download_as_bytes())["name"] == "demo-v2"


def test_a_local_npz_and_its_tokenizer_beside_it(gcs, tiny_files, tmp_path):
  source = tmp_path / "src"
  source.mkdir()
  random_npz(source / "weights.npz", "tiny-mha")
  (source / "tokenizer.model").write_bytes(tiny_files["tokenizer"])
  out = tmp_path / "m"
  gcs.gcs.reset()
  assert main(["--model", str(source / "weights.npz"), "--output", str(out)]) == 0
  check_model_dir(out, "tiny-mha", configs.model_config("tiny-mha"), "weights.npz")
  assert gcs.gcs.requests == []  # the tokenizer beside it, not the default one


def test_shapes_of_no_known_model_fail_before_any_manifest(gcs, make_npz, tmp_path, capsys):
  gcs.put_gcs("gs://weights/odd/model.npz", make_npz(0.1))  # img/embedding/kernel + llm/... as flat vectors
  out = tmp_path / "m"
  assert main(["--model", "gs://weights/odd/model.npz", "--tokenizer", TOKENIZER, "--output", str(out)]) == 1
  err = capsys.readouterr().err
  assert err.startswith("error: gs://weights/odd/model.npz: cannot tell which PaliGemma configuration it holds")
  assert "--model NAME --source URI" in err and err.count("\n") == 1
  assert not (out / "manifest.json").exists() and not (out / "model.json").exists()
