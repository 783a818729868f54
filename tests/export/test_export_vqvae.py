"""The mask codec travels with a segmentation model through export: an npz or transformers export of a model
that has one (model.json `vqvae`) ships the codec file and names it, so evaluate finds it when the export is
re-scored (the pipeline's champion) and a re-export keeps it."""
import hashlib
import json

import numpy as np
import pytest

from components import paligemma
from components.common.checkpoints import find_vqvae, read_model_json, resolve_checkpoint
from components.export.__main__ import main
from components.paligemma import configs
from components.paligemma.checkpoint import param_shapes, unflatten_params

VOCAB = 2048  # the small tokenizer's


def sha256(path):
  return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def segmenter_dir(tmp_path_factory):
  """A model directory as `components.download --vqvae` writes it: tiny weights, tokenizer, and a codec."""
  root = tmp_path_factory.mktemp("segmenter")
  cfg = configs.model_config("tiny-v2")
  cfg["llm"]["vocab_size"] = VOCAB
  rng = np.random.default_rng(0)
  params = unflatten_params({n: rng.normal(0, 0.02, s).astype(np.float32) for n, s in param_shapes(cfg).items()})
  paligemma.save(params, str(root / "base.npz"))
  paligemma.train_small_tokenizer(str(root / "tokenizer.model"), vocab_size=VOCAB)
  paligemma.save_vqvae(paligemma.init_vqvae(3, widths=(4, 8, 8, 8), dim=8), str(root / "vae-oid.npz"))
  (root / "model.json").write_text(json.dumps({**cfg, "name": "tiny-seg", "checkpoint": "base.npz",
                                               "vqvae": "vae-oid.npz"}))
  return root


def codec_of(path: str) -> str | None:
  """The codec evaluate would decode an export's <seg> tokens with (its --checkpoint reading)."""
  resolved = resolve_checkpoint(path)
  return find_vqvae(resolved, read_model_json(resolved))


def assert_same_codec(a, b):
  want, got = paligemma.load_vqvae(str(a)), paligemma.load_vqvae(str(b))
  assert set(want) == set(got) and all(np.array_equal(want[k], got[k]) for k in want)


def test_npz_export_ships_the_codec_and_a_reexport_keeps_it(segmenter_dir, tmp_path):
  out = tmp_path / "npz"
  assert main(["--checkpoint", str(segmenter_dir), "--format", "npz", "--output", str(out)]) == 0
  assert json.loads((out / "model.json").read_text())["vqvae"] == "vae-oid.npz"
  assert sha256(out / "vae-oid.npz") == sha256(segmenter_dir / "vae-oid.npz")
  manifest = json.loads((out / "manifest.json").read_text())
  assert manifest["files"]["vae-oid.npz"]["sha256"] == sha256(out / "vae-oid.npz")
  assert codec_of(str(out)) == f"{out}/vae-oid.npz"
  assert_same_codec(segmenter_dir / "vae-oid.npz", codec_of(str(out)))

  again = tmp_path / "again"
  assert main(["--checkpoint", str(out), "--format", "npz", "--dtype", "bfloat16", "--output", str(again)]) == 0
  assert sha256(again / "vae-oid.npz") == sha256(segmenter_dir / "vae-oid.npz")  # --dtype casts weights only


def test_hf_export_ships_the_codec_and_evaluate_finds_it(segmenter_dir, tmp_path):
  pytest.importorskip("transformers", reason="transformers (hf extra) writes the processor files")
  from components.evaluate import masks
  from components.evaluate.runner import load_checkpoint

  out = tmp_path / "hf"
  assert main(["--checkpoint", str(segmenter_dir), "--format", "hf", "--output", str(out)]) == 0
  model_json = json.loads((out / "model.json").read_text())
  assert model_json["vqvae"] == "vae-oid.npz" and model_json["name"] == "tiny-seg" and "checkpoint" not in model_json
  assert resolve_checkpoint(str(out)).kind == "hf"  # still a transformers directory, read as such
  _, _, _, meta = load_checkpoint(str(out))
  assert meta["name"] == "tiny-seg"
  want = paligemma.load_vqvae(str(segmenter_dir / "vae-oid.npz"))
  got = masks.load_codec(None, str(out))  # what evaluate --task segment decodes with, given no --vqvae
  assert all(np.array_equal(want[k], got[k]) for k in want)


def test_a_model_without_codec_exports_without_one(segmenter_dir, tmp_path):
  plain = tmp_path / "plain"
  plain.mkdir()
  for name in ("base.npz", "tokenizer.model"):
    (plain / name).write_bytes((segmenter_dir / name).read_bytes())
  meta = json.loads((segmenter_dir / "model.json").read_text())
  (plain / "model.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "vqvae"}))
  out = tmp_path / "out"
  assert main(["--checkpoint", str(plain), "--format", "npz", "--output", str(out)]) == 0
  assert "vqvae" not in json.loads((out / "model.json").read_text())
  assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.json", "model.npz", "tokenizer.model"]


def test_a_codec_named_but_missing_fails_before_writing(segmenter_dir, tmp_path, capsys):
  broken = tmp_path / "broken"
  broken.mkdir()
  for name in ("base.npz", "tokenizer.model", "model.json"):
    (broken / name).write_bytes((segmenter_dir / name).read_bytes())
  out = tmp_path / "out"
  assert main(["--checkpoint", str(broken), "--format", "npz", "--output", str(out)]) != 0
  err = capsys.readouterr().err
  assert f"{broken}/vae-oid.npz not found" in err and "mask codec" in err and "Traceback" not in err
  assert not out.exists()
