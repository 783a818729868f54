"""The mask codec comes with the model for segmentation: from every source kind, checked, in the manifest."""
import base64
import hashlib
import io
import json

import google_crc32c
import numpy as np
import pytest

from components.download import DEFAULT_VQVAE, DownloadError, download_model
from components.download.component import _download_model_dir
from components.paligemma import init_vqvae, load_vqvae, save_vqvae

KAGGLE_HANDLE = "team/codecs/jax/shapes/1"


@pytest.fixture(scope="session")
def codec_bytes(tmp_path_factory):
  path = tmp_path_factory.mktemp("codec") / "codec.npz"
  save_vqvae(init_vqvae(3, widths=(4, 8, 16, 32), dim=16), str(path))
  return path.read_bytes()


@pytest.fixture
def sources(servers, tiny_files, codec_bytes, tmp_path, monkeypatch):
  """The checkpoint and tokenizer locally; the codec on GCS (the released URI), Kaggle and the hub."""
  src = tmp_path / "src"
  src.mkdir()
  (src / "tiny.npz").write_bytes(tiny_files["npz"])
  (src / "tokenizer.model").write_bytes(tiny_files["tokenizer"])
  (src / "codec.npz").write_bytes(codec_bytes)
  servers.put_gcs(DEFAULT_VQVAE, codec_bytes)
  servers.kaggle.models[KAGGLE_HANDLE] = {"shapes-codec.npz": codec_bytes}
  servers.hub.add_repo("team/codecs", {"vae-oid.npz": codec_bytes, "other/mine.npz": codec_bytes})
  monkeypatch.setenv("KAGGLE_USERNAME", servers.kaggle.user)
  monkeypatch.setenv("KAGGLE_KEY", servers.kaggle.key)
  for s in (servers.gcs, servers.kaggle, servers.hub):
    s.reset()
  return servers, src


def _crc32c(data: bytes) -> str:
  return base64.b64encode(google_crc32c.Checksum(data).digest()).decode()


@pytest.mark.parametrize("uri, name", [
    (DEFAULT_VQVAE, "vae-oid.npz"),
    (f"kaggle://{KAGGLE_HANDLE}", "shapes-codec.npz"),  # a version naming no file: its one .npz
    ("hf://team/codecs", "vae-oid.npz"),  # a repo naming no file: vae-oid.npz
    ("hf://team/codecs/other/mine.npz", "mine.npz"),
    ("LOCAL", "codec.npz"),
])
def test_codec_from_every_source_is_checked_and_recorded(sources, codec_bytes, tmp_path, uri, name):
  servers, src = sources
  uri = str(src / "codec.npz") if uri == "LOCAL" else uri
  out = tmp_path / "m"
  download_model("tiny-v2", str(out), source=str(src / "tiny.npz"), vqvae=uri)

  assert (out / name).read_bytes() == codec_bytes
  assert json.loads((out / "model.json").read_text())["vqvae"] == name
  entry = json.loads((out / "manifest.json").read_text())["files"][name]
  assert entry["source"] == uri and entry["size"] == len(codec_bytes)
  assert entry["sha256"] == hashlib.sha256(codec_bytes).hexdigest() and entry["crc32c"] == _crc32c(codec_bytes)
  reference = load_vqvae(str(src / "codec.npz"))
  assert all(np.array_equal(v, reference[k]) for k, v in load_vqvae(str(out / name)).items())

  # Again into the same directory: every file verified against the manifest, nothing fetched.
  for s in (servers.gcs, servers.kaggle, servers.hub):
    s.reset()
  download_model("tiny-v2", str(out), source=str(src / "tiny.npz"), vqvae=uri)
  assert servers.gcs.media == [] and [r for r in servers.hub.requests if "/resolve/" in r["path"]] == []
  assert [r for r in servers.kaggle.requests if r["path"].startswith("/blobs/")] == []
  assert json.loads((out / "model.json").read_text())["vqvae"] == name


def test_a_changed_codec_is_fetched_again(sources, codec_bytes, tmp_path):
  servers, src = sources
  out = tmp_path / "m"
  download_model("tiny-v2", str(out), source=str(src / "tiny.npz"), vqvae=DEFAULT_VQVAE)
  (out / "vae-oid.npz").write_bytes(codec_bytes[:-10] + b"0123456789")
  servers.gcs.reset()
  download_model("tiny-v2", str(out), source=str(src / "tiny.npz"), vqvae=DEFAULT_VQVAE)
  assert (out / "vae-oid.npz").read_bytes() == codec_bytes
  assert [path for path, _ in servers.gcs.media] == ["/download/storage/v1/b/big_vision/o/paligemma/vae-oid.npz"]


def test_a_file_that_is_no_codec_is_refused_naming_the_source(sources, tiny_files, tmp_path):
  servers, src = sources
  buf = io.BytesIO()
  np.savez(buf, **{"encoder.0.weight": np.zeros((4, 1, 4, 4), np.float32)})  # one array of the layout only
  servers.put_gcs("gs://team/codecs/partial.npz", buf.getvalue())
  with pytest.raises(DownloadError, match=r"--vqvae gs://team/codecs/partial.npz is not a mask codec: .*missing "
                                          r"array\(s\) encoder.0.bias"):
    download_model("tiny-v2", str(tmp_path / "m"), source=str(src / "tiny.npz"), vqvae="gs://team/codecs/partial.npz")
  # A PaliGemma checkpoint given as the codec: not a codec either.
  (src / "other.npz").write_bytes(tiny_files["npz"])
  with pytest.raises(DownloadError, match=r"--vqvae .*other.npz is not a mask codec"):
    download_model("tiny-v2", str(tmp_path / "m2"), source=str(src / "tiny.npz"), vqvae=str(src / "other.npz"))
  assert not (tmp_path / "m" / "manifest.json").exists() and not (tmp_path / "m2" / "manifest.json").exists()


def test_an_hf_checkpoint_is_a_repo_not_a_file(sources, tmp_path):
  with pytest.raises(DownloadError, match=r"an hf:// checkpoint is a transformers repo"):
    download_model("hf://team/codecs/vae-oid.npz", str(tmp_path / "m"))


def test_cli_vqvae_alone_means_the_released_codec(sources, codec_bytes, tmp_path):
  servers, src = sources
  result = servers.run_cli("--model", "tiny-v2", "--source", str(src / "tiny.npz"), "--vqvae", "--output",
                           str(tmp_path / "m"))
  assert result.returncode == 0, result.stderr[-2000:]
  assert json.loads((tmp_path / "m" / "model.json").read_text())["vqvae"] == "vae-oid.npz"
  assert (tmp_path / "m" / "vae-oid.npz").read_bytes() == codec_bytes


def test_component_fetches_the_codec_for_segment_only(sources, codec_bytes, tmp_path):
  from kfp.dsl import Model

  servers, src = sources
  detect = Model(uri=str(tmp_path / "detect"))
  _download_model_dir("tiny-v2", detect, source=str(src / "tiny.npz"), task="detect")
  assert "vqvae" not in json.loads((tmp_path / "detect" / "model.json").read_text())
  assert "vqvae" not in detect.metadata and servers.gcs.media == []

  segment = Model(uri=str(tmp_path / "segment"))
  _download_model_dir("tiny-v2", segment, source=str(src / "tiny.npz"), task="segment")  # default: the released
  assert segment.metadata["vqvae"] == "vae-oid.npz"
  assert (tmp_path / "segment" / "vae-oid.npz").read_bytes() == codec_bytes

  mine = Model(uri=str(tmp_path / "mine"))
  _download_model_dir("tiny-v2", mine, source=str(src / "tiny.npz"), task="segment", vqvae=str(src / "codec.npz"))
  assert mine.metadata["vqvae"] == "codec.npz"
