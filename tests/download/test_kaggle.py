"""Kaggle downloads: kagglehub against a local server speaking Kaggle's model API."""
import hashlib
import json

import pytest

from components.download import ChecksumError, DownloadError, download_model
from components.paligemma import configs

NAME = "paligemma2-3b-pt-224"
HANDLE = f"google/paligemma-2/jax/{NAME}/1"
FILE = f"{NAME}.b16.npz"


@pytest.fixture
def kaggle(servers, tiny_files, monkeypatch):
  """The released checkpoint on the Kaggle server, the default tokenizer on GCS, credentials in the env."""
  servers.kaggle.models[HANDLE] = {FILE: tiny_files["npz"]}
  servers.put_gcs("gs://big_vision/paligemma_tokenizer.model", tiny_files["tokenizer"])
  servers.gcs.reset()
  monkeypatch.setenv("KAGGLE_USERNAME", servers.kaggle.user)
  monkeypatch.setenv("KAGGLE_KEY", servers.kaggle.key)
  return servers


def sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def test_fresh_download_of_a_released_name(kaggle, tiny_files, tmp_path):
  out = tmp_path / "model"
  download_model(NAME, str(out))

  assert (out / FILE).read_bytes() == tiny_files["npz"]
  assert (out / "tokenizer.model").read_bytes() == tiny_files["tokenizer"]
  model_json = json.loads((out / "model.json").read_text())
  assert model_json == {**configs.model_config(NAME), "name": NAME, "checkpoint": FILE}
  manifest = json.loads((out / "manifest.json").read_text())
  assert manifest["files"][FILE]["source"] == f"kaggle://{HANDLE}/{FILE}"
  assert manifest["files"][FILE]["sha256"] == sha256(tiny_files["npz"])
  assert manifest["files"][FILE]["size"] == len(tiny_files["npz"])
  assert manifest["files"]["tokenizer.model"]["source"] == "gs://big_vision/paligemma_tokenizer.model"
  assert manifest["files"]["tokenizer.model"]["sha256"] == sha256(tiny_files["tokenizer"])
  assert manifest["files"]["model.json"]["sha256"] == sha256((out / "model.json").read_bytes())
  # Through the 302 to the storage URL, authenticated with Basic auth on the RPC.
  rpc = [r for r in kaggle.kaggle.requests if r["path"].endswith("DownloadModelInstanceVersion")]
  assert len(rpc) == 1 and rpc[0]["authorization"].startswith("Basic ")
  assert [r["path"].split("?")[0] for r in kaggle.kaggle.requests if r["path"].startswith("/blobs/")] == [
      f"/blobs/{HANDLE}/{FILE}"]


def test_cache_and_verified_directory_make_no_request(kaggle, tiny_files, tmp_path):
  download_model(NAME, str(tmp_path / "a"))
  kaggle.kaggle.reset()
  kaggle.gcs.reset()

  # A new directory: the checkpoint comes from kagglehub's cache without any request to Kaggle.
  download_model(NAME, str(tmp_path / "b"))
  assert kaggle.kaggle.requests == []
  assert (tmp_path / "b" / FILE).read_bytes() == tiny_files["npz"]

  # The same directory again: every file is verified against the manifest; no request anywhere.
  kaggle.gcs.reset()
  download_model(NAME, str(tmp_path / "b"))
  assert kaggle.kaggle.requests == [] and kaggle.gcs.requests == []


def test_tampered_file_in_directory_is_fetched_again(kaggle, tiny_files, tmp_path):
  out = tmp_path / "m"
  download_model(NAME, str(out))
  with open(out / FILE, "r+b") as f:  # in place: the hard-linked copy in kagglehub's cache changes too
    f.seek(len(tiny_files["npz"]) // 2)
    byte = f.read(1)
    f.seek(-1, 1)
    f.write(bytes([byte[0] ^ 0xFF]))
  kaggle.kaggle.reset()

  download_model(NAME, str(out))
  assert (out / FILE).read_bytes() == tiny_files["npz"]
  assert len([r for r in kaggle.kaggle.requests if r["path"].startswith("/blobs/")]) == 1  # past the cache


def test_interrupted_download_resumes_with_a_range_request(kaggle, make_npz, tmp_path):
  data = make_npz(3.0)  # several of kagglehub's 1 MiB chunks
  kaggle.kaggle.models[HANDLE] = {FILE: data}
  cut = 2**20 + 300_000  # past kagglehub's first 1 MiB chunk, so the partial file holds 1 MiB
  kaggle.kaggle.faults.drop_once[f"/blobs/{HANDLE}/{FILE}"] = cut

  download_model(NAME, str(tmp_path / "m"))

  assert (tmp_path / "m" / FILE).read_bytes() == data
  assert kaggle.kaggle.drops == [f"/blobs/{HANDLE}/{FILE}?sig=s1gn3d"]
  ranges = [r["range"] for r in kaggle.kaggle.requests if r["path"].startswith("/blobs/") and r["range"]]
  assert ranges == [f"bytes={2**20}-"]
  # The resumed request carried only the rest of the file.
  assert kaggle.kaggle.bytes_sent < len(data) + len(data) - 2**20 + 1


def test_corrupted_bytes_are_retried(kaggle, tiny_files, tmp_path):
  kaggle.kaggle.faults.tamper[f"/blobs/{HANDLE}/{FILE}"] = 1
  download_model(NAME, str(tmp_path / "m"))
  assert (tmp_path / "m" / FILE).read_bytes() == tiny_files["npz"]
  assert len([r for r in kaggle.kaggle.requests if r["path"].startswith("/blobs/")]) == 2


def test_corruption_that_persists_is_a_clear_error(kaggle, tmp_path):
  kaggle.kaggle.faults.tamper[f"/blobs/{HANDLE}/{FILE}"] = -1
  with pytest.raises(ChecksumError, match=r"failed its checksum 3 times.*md5"):
    download_model(NAME, str(tmp_path / "m"), retries=3)
  assert len([r for r in kaggle.kaggle.requests if r["path"].startswith("/blobs/")]) == 3
  assert not (tmp_path / "m" / "manifest.json").exists()


def test_missing_credentials_is_a_clear_401(kaggle, tmp_path, monkeypatch):
  monkeypatch.delenv("KAGGLE_KEY")
  with pytest.raises(DownloadError, match=r"HTTP 401.*Accept the model's licence at "
                     r"https://www.kaggle.com/models/google/paligemma-2.*KAGGLE_USERNAME and KAGGLE_KEY"):
    download_model(NAME, str(tmp_path / "m"))


def test_wrong_key_is_a_clear_401(kaggle, tmp_path, monkeypatch):
  monkeypatch.setenv("KAGGLE_KEY", "not-the-key-123")
  with pytest.raises(DownloadError, match="HTTP 401"):
    download_model(NAME, str(tmp_path / "m"))


def test_unknown_model_or_file_is_a_clear_404(kaggle, tmp_path):
  with pytest.raises(DownloadError, match=r"HTTP 404.*check the model name"):
    download_model(f"kaggle://google/paligemma-2/jax/{NAME}/7/{FILE}", str(tmp_path / "m"))
  with pytest.raises(DownloadError, match=r"HTTP 404"):
    download_model(f"kaggle://google/paligemma-2/jax/{NAME}/1/nope.npz", str(tmp_path / "m"))


def test_credentials_file_and_api_token(kaggle, tiny_files, tmp_path, monkeypatch):
  monkeypatch.delenv("KAGGLE_USERNAME")
  monkeypatch.delenv("KAGGLE_KEY")
  creds = tmp_path / "kaggle.json"
  creds.write_text(json.dumps({"username": kaggle.kaggle.user, "key": kaggle.kaggle.key}))
  download_model(NAME, str(tmp_path / "a"), kaggle_credentials=str(creds))
  assert (tmp_path / "a" / FILE).read_bytes() == tiny_files["npz"]

  import kagglehub.config
  kagglehub.config.clear_kaggle_credentials()
  monkeypatch.setenv("KAGGLE_API_TOKEN", kaggle.kaggle.key)
  monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "fresh-cache"))
  download_model(NAME, str(tmp_path / "b"))
  bearer = [r for r in kaggle.kaggle.requests if (r["authorization"] or "").startswith("Bearer ")]
  assert bearer and (tmp_path / "b" / FILE).read_bytes() == tiny_files["npz"]


def test_kaggle_uri_without_file_takes_the_dtype_file_and_direct_bytes(kaggle, tiny_files, tmp_path):
  kaggle.kaggle.redirect = False  # the RPC answers with the bytes itself
  kaggle.kaggle.models[HANDLE]["other.npz"] = b"not this one"
  download_model(f"kaggle://{HANDLE}", str(tmp_path / "m"))
  assert (tmp_path / "m" / FILE).read_bytes() == tiny_files["npz"]
  assert json.loads((tmp_path / "m" / "model.json").read_text())["name"] == NAME


def test_whole_version_of_a_custom_model(kaggle, tiny_files, tmp_path):
  """A Kaggle model that is no release: the whole version is listed and fetched; its one .npz is used."""
  kaggle.kaggle.models["someone/my-paligemma/jax/custom/3"] = {"ckpt.npz": tiny_files["npz"], "notes.txt": b"hi"}
  download_model("tiny-v2", str(tmp_path / "m"), source="kaggle://someone/my-paligemma/jax/custom/3")
  assert (tmp_path / "m" / "ckpt.npz").read_bytes() == tiny_files["npz"]
  assert any(r["path"].endswith("ListModelInstanceVersionFiles") for r in kaggle.kaggle.requests)
  # Without --model NAME the checkpoint's array shapes say which model it is.
  download_model("kaggle://someone/my-paligemma/jax/custom/3", str(tmp_path / "n"))
  assert json.loads((tmp_path / "n" / "model.json").read_text()) == {
      **configs.model_config("tiny-v2"), "name": "tiny-v2", "checkpoint": "ckpt.npz"}


def test_standard_kaggle_json(kaggle, tiny_files, tmp_path, monkeypatch):
  monkeypatch.delenv("KAGGLE_USERNAME")
  monkeypatch.delenv("KAGGLE_KEY")
  config_dir = tmp_path / "home" / ".kaggle"  # KAGGLE_CONFIG_DIR in the servers fixture
  config_dir.mkdir(parents=True, exist_ok=True)
  (config_dir / "kaggle.json").write_text(json.dumps({"username": kaggle.kaggle.user, "key": kaggle.kaggle.key}))
  download_model(NAME, str(tmp_path / "m"))
  assert (tmp_path / "m" / FILE).read_bytes() == tiny_files["npz"]


def test_server_errors_are_retried_then_a_clear_error(kaggle, tiny_files, tmp_path, monkeypatch):
  kaggle.kaggle.outages[:] = [503]
  download_model(NAME, str(tmp_path / "a"))
  assert (tmp_path / "a" / FILE).read_bytes() == tiny_files["npz"]

  kaggle.kaggle.outages[:] = [503, 503]
  monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "empty-cache"))
  with pytest.raises(DownloadError, match=r"could not download kaggle://.* after 2 attempts: Kaggle answered HTTP 503"):
    download_model(NAME, str(tmp_path / "b"), retries=2, cache_dir=str(tmp_path))
