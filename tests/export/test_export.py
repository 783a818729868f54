"""The export step end to end: npz and transformers exports of a model directory and of a finetune workdir,
gs:// publication against the GCS emulator, the Vertex AI registry dry run, and the KFP component."""
import hashlib
import io
import json
import os
import pathlib
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

from components import paligemma
from components.export.__main__ import main
from components.paligemma import configs
from components.paligemma.checkpoint import flatten_params, param_shapes, unflatten_params

REPO = pathlib.Path(__file__).resolve().parents[2]
VOCAB = 2048  # the small tokenizer's
TOL = 1e-4


def small_cfg():
  cfg = configs.model_config("tiny-v2")
  cfg["llm"]["vocab_size"] = VOCAB
  return cfg


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  """A model directory as components.download writes it: random tiny PaliGemma 2 in f32, real tokenizer."""
  root = tmp_path_factory.mktemp("model")
  cfg = small_cfg()
  rng = np.random.default_rng(0)
  params = unflatten_params({n: rng.normal(0, 0.02 if n.startswith("llm/embedder") else 0.2, s).astype(np.float32)
                             for n, s in param_shapes(cfg).items()})
  paligemma.save(params, str(root / "base.npz"))
  paligemma.train_small_tokenizer(str(root / "tokenizer.model"), vocab_size=VOCAB)
  (root / "model.json").write_text(json.dumps({**cfg, "name": "tiny-test", "checkpoint": "base.npz"}))
  return root


def sha256(path):
  return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def check_manifest(out):
  """Every file is listed with its real size and sha256, and nothing else is there."""
  manifest = json.loads((out / "manifest.json").read_text())
  on_disk = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} - {"manifest.json"}
  assert set(manifest["files"]) == on_disk
  for name, entry in manifest["files"].items():
    assert entry == {"size": (out / name).stat().st_size, "sha256": sha256(out / name)}, name
  assert manifest["package"]["version"] and manifest["package"]["name"] == "paligemma-pipelines"
  return manifest


def test_npz_export_reloads_bit_identically(model_dir, tmp_path):
  out = tmp_path / "exports" / "npz"
  assert main(["--checkpoint", str(model_dir / "base.npz"), "--export-format", "npz", "--output", str(out)]) == 0
  source = flatten_params(paligemma.load(str(model_dir / "base.npz"), small_cfg()))
  exported = flatten_params(paligemma.load(str(out / "model.npz"), small_cfg()))
  assert set(exported) == set(source)
  for name in source:
    assert exported[name].dtype == source[name].dtype and exported[name].tobytes() == source[name].tobytes(), name
  model_json = json.loads((out / "model.json").read_text())
  assert model_json["checkpoint"] == "model.npz" and model_json["llm"] == small_cfg()["llm"]
  assert sha256(out / "tokenizer.model") == sha256(model_dir / "tokenizer.model")
  manifest = check_manifest(out)
  assert manifest["source"]["checkpoint"] == str(model_dir / "base.npz") and manifest["format"] == "npz"

  # Exporting again (bf16 now) replaces the directory whole; no temporary directory is left behind.
  assert main(["--checkpoint", str(model_dir / "base.npz"), "--export-format", "npz", "--dtype", "bfloat16",
               "--output", str(out)]) == 0
  cast = flatten_params(paligemma.load(str(out / "model.npz"), small_cfg()))
  for name in source:
    assert cast[name].tobytes() == source[name].astype(ml_dtypes.bfloat16).tobytes(), name
  assert check_manifest(out)["dtype"] == "bfloat16"
  assert sorted(p.name for p in out.parent.iterdir()) == ["npz"]


def test_hf_export_matches_our_model_and_its_processor(model_dir, tmp_path):
  torch = pytest.importorskip("torch", reason="torch (dev extra) runs the transformers model")
  transformers = pytest.importorskip("transformers", reason="transformers (dev extra) is needed")
  from PIL import Image

  out = tmp_path / "hf"
  assert main(["--checkpoint", str(model_dir / "base.npz"), "--export-format", "hf", "--output", str(out)]) == 0
  check_manifest(out)
  cfg = small_cfg()
  size, n_img = configs.image_size(cfg), configs.num_image_tokens(cfg)

  processor = transformers.PaliGemmaProcessor.from_pretrained(out)
  pixels = np.random.default_rng(3).integers(0, 256, (size + 9, size - 5, 3), dtype=np.uint8)
  prompt = "detect cat ; dog"
  inputs = processor(images=Image.fromarray(pixels), text="<image>" + prompt, return_tensors="pt")
  ours = paligemma.Tokenizer(str(model_dir / "tokenizer.model")).encode_prompt(prompt, 32)
  text = ours["text"][ours["mask_input"] == 1]
  np.testing.assert_array_equal(inputs["input_ids"][0].numpy(), np.concatenate([[VOCAB] * n_img, text]))
  assert inputs["pixel_values"].shape == (1, 3, size, size)
  assert -1 <= inputs["pixel_values"].min() < inputs["pixel_values"].max() <= 1

  hf_model = transformers.PaliGemmaForConditionalGeneration.from_pretrained(out, dtype=torch.float32).eval()
  with torch.no_grad():
    hf_logits = hf_model(**inputs).logits.numpy()[:, n_img:, :VOCAB]
  image = inputs["pixel_values"].numpy().transpose(0, 2, 3, 1)
  params = paligemma.load(str(model_dir / "base.npz"), cfg)
  logits, _ = paligemma.Model(**cfg).apply({"params": params}, image, text[None], np.zeros((1, len(text)), np.int32))
  np.testing.assert_allclose(hf_logits, np.asarray(logits), atol=TOL, rtol=0)


def test_an_hf_export_is_a_checkpoint_again(model_dir, tmp_path):
  """A champion exported with --format hf is re-scored by evaluate and re-exported: the same weights."""
  pytest.importorskip("transformers", reason="transformers (hf extra) writes the processor files")
  from components.evaluate.runner import load_checkpoint

  hf_dir = tmp_path / "hf"
  assert main(["--checkpoint", str(model_dir / "base.npz"), "--format", "hf", "--output", str(hf_dir)]) == 0
  source = flatten_params(paligemma.load(str(model_dir / "base.npz"), small_cfg()))
  params, model_cfg, tokenizer, meta = load_checkpoint(str(hf_dir))
  assert meta["name"] == "tiny-test"
  assert configs.resolve_llm(model_cfg["llm"]) == configs.resolve_llm(small_cfg()["llm"])
  assert configs.resolve_img(model_cfg["img"]) == configs.resolve_img(small_cfg()["img"])
  assert tokenizer.vocab_size == VOCAB
  got = flatten_params(params)
  assert set(got) == set(source) and all(np.array_equal(got[k], source[k]) for k in source)

  again = tmp_path / "npz"
  assert main(["--checkpoint", str(hf_dir), "--format", "npz", "--output", str(again)]) == 0
  reexported = flatten_params(paligemma.load(str(again / "model.npz"), model_cfg))
  assert all(np.array_equal(reexported[k], source[k]) for k in source)
  manifest = json.loads((again / "manifest.json").read_text())
  assert manifest["source"] == {"checkpoint": str(hf_dir), "kind": "hf"} and manifest["name"] == "tiny-test"


SECRETS = {"HF_TOKEN": "hf_SeCrEt_0123456789", "KAGGLE_KEY": "kaggle-SeCrEt-4567",
           "GOOGLE_OAUTH_ACCESS_TOKEN": "ya29.SeCrEt-access-token"}


def test_register_dry_run_prints_the_request_and_no_secret(model_dir, tmp_path, capsys, monkeypatch, caplog):
  key_file = tmp_path / "sa.json"
  key_file.write_text(json.dumps({"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----SeCrEtKey"}))
  for name, value in SECRETS.items():
    monkeypatch.setenv(name, value)
  monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
  monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "my-project")

  out = tmp_path / "registered"
  # An npz has no default serving container: that fails before anything is written.
  assert main(["--checkpoint", str(model_dir / "base.npz"), "--export-format", "npz", "--output", str(out), "--register",
               "--dry-run"]) == 2
  assert "--serving-container" in capsys.readouterr().err and not out.exists()

  assert main(["--checkpoint", str(model_dir / "base.npz"), "--export-format", "npz", "--output", str(out), "--register",
               "--dry-run", "--serving-container", "europe-docker.pkg.dev/p/r/serve:1", "--labels", "Team=Vision AI",
               "--display-name", "colours-v1"]) == 0
  printed = capsys.readouterr()
  request = json.loads(printed.out[printed.out.index("{"):])
  assert request["method"] == "google.cloud.aiplatform.Model.upload"
  kwargs = request["kwargs"]
  assert kwargs["artifact_uri"] == str(out) and kwargs["display_name"] == "colours-v1"
  assert kwargs["serving_container_image_uri"] == "europe-docker.pkg.dev/p/r/serve:1"
  assert kwargs["project"] == "my-project" and kwargs["labels"]["team"] == "vision-ai"
  assert kwargs["labels"]["format"] == "npz"

  texts = [printed.out, printed.err, caplog.text] + [p.read_bytes().decode("latin-1") for p in out.rglob("*")]
  for secret in [*SECRETS.values(), "SeCrEtKey", str(key_file)]:
    assert not any(secret in text for text in texts), secret


def test_a_bare_npz_exports_as_its_shapes_say_with_the_tokenizer_given(model_dir, tmp_path, capsys):
  bare = tmp_path / "bare"
  bare.mkdir()
  (bare / "weights.npz").write_bytes((model_dir / "base.npz").read_bytes())  # no model.json, no tokenizer
  args = ["--checkpoint", str(bare / "weights.npz"), "--export-format", "hf", "--output", str(tmp_path / "o")]
  assert main(args) == 2
  err = capsys.readouterr().err
  assert f"{bare / 'tokenizer.model'} not found" in err and "--tokenizer" in err and not (tmp_path / "o").exists()
  assert main([*args, "--tokenizer", str(model_dir / "tokenizer.model")]) == 0
  manifest = check_manifest(tmp_path / "o")
  assert configs.resolve_llm(manifest["model_cfg"]["llm"]) == configs.resolve_llm(small_cfg()["llm"])
  assert sha256(tmp_path / "o" / "tokenizer.model") == sha256(model_dir / "tokenizer.model")

  (bare / "lonely.npz").write_bytes(b"")  # not a checkpoint at all: an error naming the file
  assert main(["--checkpoint", str(bare / "lonely.npz"), "--export-format", "npz", "--output", str(tmp_path / "p"),
               "--tokenizer", str(model_dir / "tokenizer.model")]) == 2
  err = capsys.readouterr().err
  assert f"{bare / 'lonely.npz'} is not a readable .npz" in err and not (tmp_path / "p").exists()


@pytest.fixture
def models_bucket(gcs_emulator):
  env, client = gcs_emulator
  return client.create_bucket("models"), env


@pytest.mark.slow  # ~20 s: a fresh interpreter (gcsfs reads the emulator's address from the environment)
def test_export_to_gcs_and_read_back(model_dir, tmp_path, models_bucket):
  bucket, env = models_bucket
  # A previous export at the same place: its extra shard must go, its manifest must be replaced.
  bucket.blob("runs/7/model-00001-of-00009.safetensors").upload_from_string(b"stale")
  bucket.blob("runs/7/manifest.json").upload_from_string(b"{}")
  cmd = [sys.executable, "-m", "components.export", "--checkpoint", str(model_dir / "base.npz"), "--export-format", "npz",
         "--output", "gs://models/runs/7"]
  done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, **env}, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]

  names = sorted(b.name for b in bucket.client.list_blobs("models"))
  manifest = json.loads(bucket.blob("runs/7/manifest.json").download_as_bytes())
  assert names == sorted([f"runs/7/{n}" for n in manifest["files"]] + ["runs/7/manifest.json"])  # no temp prefix
  for name, entry in manifest["files"].items():
    data = bucket.blob(f"runs/7/{name}").download_as_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["size"], name
  downloaded = tmp_path / "model.npz"
  downloaded.write_bytes(bucket.blob("runs/7/model.npz").download_as_bytes())
  back = flatten_params(paligemma.load(str(downloaded), small_cfg()))
  source = flatten_params(paligemma.load(str(model_dir / "base.npz"), small_cfg()))
  assert all(back[n].tobytes() == source[n].tobytes() for n in source)


def test_component_compiles(tmp_path):
  from kfp import compiler

  from components.export.component import export_model

  path = tmp_path / "export.yaml"
  compiler.Compiler().compile(export_model, str(path))
  text = path.read_text()
  assert "export_format" in text and "exported" in text and "components.export.task" in text


def write_tiny_dataset(root, n=16):
  """Solid-colour squares captioned with their colour, as components.convert lays them out."""
  from array_record.python.array_record_module import ArrayRecordWriter
  from PIL import Image

  from components.common import records

  (root / records.RECORDS_DIR).mkdir(parents=True)
  for split in ("train", "valid"):
    writer = ArrayRecordWriter(str(root / records.RECORDS_DIR / records.shard_name(split, 0, 1)), "group_size:1")
    rows = []
    for i in range(n):
      colour = ("red", "blue")[i % 2]
      buf = io.BytesIO()
      Image.new("RGB", (40, 30), (200, 20, 20) if colour == "red" else (20, 20, 200)).save(buf, format="PNG")
      row = {"image": f"images/{split}-{i}.png", "prefix": "caption en", "suffix": f"a {colour} square"}
      rows.append(row)
      writer.write(records.encode_record({**row, "id": f"{split}-{i}", "image": buf.getvalue(),
                                          "image_path": row["image"]}))
    writer.close()
    (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.slow  # ~1 min: trains a tiny model for a few steps first
def test_export_of_a_finetune_workdir(model_dir, tmp_path):
  from components.finetune import load_trained_params

  data, workdir = tmp_path / "data", tmp_path / "workdir"
  write_tiny_dataset(data)
  cmd = [sys.executable, "-m", "components.finetune", "--config", str(REPO / "components/finetune/configs/tiny_test.py"),
         "--workdir", str(workdir), f"--config.data_dir={data}", f"--config.tokenizer={model_dir / 'tokenizer.model'}",
         "--config.total_steps=2", "--config.checkpoint_every=2", "--config.eval_every=2", "--config.log_every=1"]
  done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert done.returncode == 0, done.stderr[-3000:]

  out = tmp_path / "export"
  assert main(["--checkpoint", str(workdir), "--export-format", "npz", "--output", str(out), "--dtype", "bfloat16"]) == 0
  manifest = check_manifest(out)
  source = manifest["source"]
  assert source["kind"] == "workdir" and source["which"] == "latest"
  assert source["config_sha256"] == sha256(workdir / "config.json")
  assert source["dataset"] == {"uri": str(data), "version": None,  # written by hand: unversioned
                               "sha256": {"train.jsonl": sha256(data / "train.jsonl"),
                                          "valid.jsonl": sha256(data / "valid.jsonl")}}
  assert manifest["metrics"]["training"]  # the last metrics.jsonl values
  trained, model_cfg = load_trained_params(str(workdir), "latest")
  exported = flatten_params(paligemma.load(str(out / "model.npz"), model_cfg))
  for name, value in flatten_params(trained).items():
    assert exported[name].tobytes() == value.astype(ml_dtypes.bfloat16).tobytes(), name


def test_component_body_runs_the_same_export(model_dir, tmp_path):
  """The KFP component's body on a model-directory artifact (as the local runner hands it over)."""
  from kfp.dsl import Model

  from components.export.component import _export_model

  exported = Model(uri=str(tmp_path / "exported"))
  manifest = json.loads(_export_model(Model(uri=str(model_dir)), "npz", exported, checkpoint_file="base.npz",
                                      dtype="float16", labels="team=vision"))
  assert manifest == json.loads((tmp_path / "exported" / "manifest.json").read_text())
  assert exported.metadata["format"] == "npz" and exported.metadata["dtype"] == "float16"
  back = flatten_params(paligemma.load(str(tmp_path / "exported" / "model.npz"), small_cfg()))
  assert back["img/head/kernel"].dtype == np.float16


def test_dry_run_without_register_is_an_error(tmp_path, capsys):
  out = tmp_path / "out"
  assert main(["--checkpoint", str(tmp_path / "missing.npz"), "--export-format", "npz", "--output", str(out),
               "--dry-run"]) == 2
  assert "--register" in capsys.readouterr().err and not out.exists()


def test_a_model_directory_is_accepted_as_checkpoint(model_dir, tmp_path):
  out = tmp_path / "from-dir"
  assert main(["--checkpoint", str(model_dir), "--export-format", "npz", "--output", str(out)]) == 0
  manifest = check_manifest(out)
  assert manifest["source"]["kind"] == "npz" and manifest["source"]["checkpoint"] == f"{model_dir}/base.npz"
  back = flatten_params(paligemma.load(str(out / "model.npz"), small_cfg()))
  source = flatten_params(paligemma.load(str(model_dir / "base.npz"), small_cfg()))
  assert back.keys() == source.keys() and all(back[n].tobytes() == source[n].tobytes() for n in source)


def test_component_records_the_evaluation_and_takes_a_model_directory(model_dir, tmp_path):
  from kfp.dsl import Artifact, Model

  from components.export.component import _export_model

  evaluation = tmp_path / "evaluation"
  evaluation.mkdir()
  (evaluation / "metrics.json").write_text(json.dumps({"task": "caption", "cider": 0.5}))
  exported = Model(uri=str(tmp_path / "exported"))
  manifest = json.loads(_export_model(Model(uri=str(model_dir)), "npz", exported,
                                      evaluation=Artifact(uri=str(evaluation)), project="p", location="europe-west4"))
  assert manifest["metrics"]["evaluation"] == {"task": "caption", "cider": 0.5}
  assert manifest["source"]["checkpoint"] == f"{model_dir}/base.npz"


def test_component_signature_exposes_evaluation_project_location(tmp_path):
  import yaml
  from kfp import compiler

  from components.export.component import export_model

  path = tmp_path / "export.yaml"
  compiler.Compiler().compile(export_model, str(path))
  spec = yaml.safe_load(path.read_text())["root"]["inputDefinitions"]
  assert {"project", "location", "which"} <= set(spec["parameters"])
  assert spec["artifacts"]["evaluation"].get("isOptional") is True


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"),
                                   PermissionError(13, "Permission denied", "/exports/npz/model.npz")])
def test_disk_full_or_permission_denied_is_one_line_naming_the_path(model_dir, tmp_path, capsys, monkeypatch, error):
  out = tmp_path / "exports" / "npz"
  assert main(["--checkpoint", str(model_dir / "base.npz"), "--export-format", "npz", "--output", str(out)]) == 0
  before = {p.name: p.read_bytes() for p in out.iterdir()}

  def fail(*args, **kwargs):
    raise error
  monkeypatch.setattr("components.export.core.paligemma.save", fail)
  capsys.readouterr()
  assert main(["--checkpoint", str(model_dir / "base.npz"), "--export-format", "npz", "--output", str(out)]) == 1
  err = capsys.readouterr().err.strip().splitlines()
  where = error.filename or str(out)  # the file when the system names one, else the export
  reason = "no space left on the device" if error.errno == 28 else "permission denied"
  assert err == [f"export failed: {reason} at {where}: " + ("free some space or use another location" if error.errno
                                                            == 28 else "fix the permissions or use another location")]
  assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the previous export is whole
  assert sorted(p.name for p in out.parent.iterdir()) == ["npz"]
