"""Released names -> Kaggle handles and hub repos; source URIs; the plan the CLI makes."""
import pytest

from components.download import DownloadError, Kind, parse, plan, release_source
from components.download.sources import name_from_file
from components.paligemma import configs


@pytest.mark.parametrize("name", configs.released_names())
def test_every_released_name_maps_to_kaggle_and_the_hub(name):
  kaggle = release_source(name, "kaggle")
  family = "paligemma-2" if name.startswith("paligemma2-") else "paligemma"
  suffix = ".b16.npz" if name.startswith("paligemma2-") else ".bf16.npz"
  assert kaggle.uri == f"kaggle://google/{family}/jax/{name}/1/{name}{suffix}"
  assert release_source(name, "hf").uri == f"hf://google/{name}"
  assert name_from_file(kaggle.basename) == name
  p = plan(name)
  assert p.checkpoint == kaggle and p.model_cfg == configs.model_config(name) and p.name == name


def test_published_dtypes():
  assert release_source("paligemma-3b-pt-896", "kaggle", "float32").basename == "paligemma-3b-pt-896.npz"
  assert release_source("paligemma-3b-pt-896", "kaggle", "float16").basename == "paligemma-3b-pt-896.f16.npz"
  with pytest.raises(DownloadError, match=r"published in \['bfloat16'\] only.*--dtype bfloat16"):
    release_source("paligemma2-28b-pt-896", "kaggle", "float32")
  assert release_source("paligemma2-10b-ft-docci-448", "kaggle").basename == "paligemma2-10b-ft-docci-448.b16.npz"


def test_parse_uris(tmp_path):
  assert parse("kaggle://google/paligemma-2/jax/paligemma2-3b-pt-224/1").kind is Kind.KAGGLE
  assert parse("hf://google/paligemma2-3b-pt-224@main").kind is Kind.HF
  assert parse("gs://b/x/y.npz").kind is Kind.GCS
  assert parse(f"file://{tmp_path}/x.npz") == parse(str(tmp_path / "x.npz"))
  for bad, message in [("kaggle://google/paligemma", "bad Kaggle URI"), ("hf://google", "bad Hugging Face URI"),
                       ("gs://bucket/", "bad GCS URI"), ("s3://b/x.npz", "unsupported source")]:
    with pytest.raises(DownloadError, match=message):
      parse(bad)


def test_plan_infers_the_model_from_the_source():
  p = plan("kaggle://google/paligemma/jax/paligemma-3b-mix-448/1", dtype="float16")
  assert p.name == "paligemma-3b-mix-448" and p.kaggle_file == "paligemma-3b-mix-448.f16.npz"
  assert p.model_cfg == configs.model_config("paligemma-3b-mix-448")
  p = plan("gs://mirror/paligemma2-10b-pt-448.b16.npz")
  assert p.name == "paligemma2-10b-pt-448" and p.model_cfg == configs.model_config("paligemma2-10b-pt-448")
  p = plan("gs://mirror/my-finetune.npz")
  assert p.name is None and p.model_cfg is None  # looked up beside the file (model.json) at download time
  assert plan("paligemma2-3b-pt-448", source="hf").checkpoint.uri == "hf://google/paligemma2-3b-pt-448"
  with pytest.raises(DownloadError, match="--source gcs needs --gcs-mirror"):
    plan("paligemma2-3b-pt-448", source="gcs")
  with pytest.raises(DownloadError, match="already a source"):
    plan("gs://mirror/x.npz", source="hf")
  with pytest.raises(DownloadError, match="--dtype int8"):
    plan("paligemma2-3b-pt-448", dtype="int8")


def test_local_model_directory_as_source(tiny_files, tmp_path):
  from components.download import download_model

  first = tmp_path / "first"
  first.mkdir()
  (first / "ckpt.npz").write_bytes(tiny_files["npz"])
  (first / "tokenizer.model").write_bytes(tiny_files["tokenizer"])
  download_model("tiny-v2", str(tmp_path / "a"), source=str(first / "ckpt.npz"))
  download_model(str(tmp_path / "a"), str(tmp_path / "b"))  # a model directory stands for its checkpoint
  for name in ("ckpt.npz", "tokenizer.model", "model.json"):
    assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "a" / name).read_bytes()
  with pytest.raises(DownloadError, match="directory without model.json"):
    download_model(str(first), str(tmp_path / "c"))


def test_unusual_files_are_warned_about(tiny_files, tmp_path, caplog):
  import io

  import numpy as np

  from components.download import download_model

  buf = io.BytesIO()
  np.savez(buf, weights=np.zeros(3, np.float32))
  (tmp_path / "other.npz").write_bytes(buf.getvalue())
  (tmp_path / "tok.model").write_bytes(b"not a sentencepiece proto")
  download_model("tiny-v2", str(tmp_path / "m"), source=str(tmp_path / "other.npz"),
                 tokenizer=str(tmp_path / "tok.model"))
  assert "does not look like a PaliGemma checkpoint: its arrays are under ['weights']" in caplog.text
  assert "tokenizer.model is not a sentencepiece model" in caplog.text
  assert (tmp_path / "m" / "other.npz").read_bytes() == buf.getvalue()
