"""GCS downloads and uploads: google-cloud-storage against the GCS emulator behind a counting proxy."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from components.download import ChecksumError, DownloadError, download_model
from components.paligemma import configs

MiB = 2**20
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def gcs(servers, tiny_files):
  servers.put_gcs("gs://big_vision/paligemma_tokenizer.model", tiny_files["tokenizer"])
  servers.put_gcs("gs://weights/pg/tiny.npz", tiny_files["npz"])
  servers.gcs_client().create_bucket("models")
  servers.gcs.reset()
  return servers


def chunk_starts(media, name):
  """The start offsets of the ranged reads of object `name`."""
  return sorted(int(r.split("=")[1].split("-")[0]) for path, r in media if path.endswith(name))


def test_parallel_chunked_download(gcs, make_npz, tmp_path):
  data = make_npz(5.2)
  gcs.put_gcs("gs://weights/pg/big.npz", data)
  gcs.gcs.reset()
  download_model("tiny-v2", str(tmp_path / "m"), source="gs://weights/pg/big.npz", gcs_chunk_mib=1)
  assert (tmp_path / "m" / "big.npz").read_bytes() == data
  assert chunk_starts(gcs.gcs.media, "big.npz") == [i * MiB for i in range(6)]  # one ranged read per 1 MiB chunk


def test_a_file_that_is_no_checkpoint_is_a_clear_error(gcs, tmp_path):
  gcs.put_gcs("gs://weights/pg/page.npz", b"<html>Sign in to continue</html>")
  with pytest.raises(DownloadError, match=r"page.npz is not an .npz file"):
    download_model("tiny-v2", str(tmp_path / "m"), source="gs://weights/pg/page.npz")


def test_gs_source_and_default_tokenizer(gcs, tiny_files, tmp_path):
  out = tmp_path / "m"
  download_model("tiny-v2", str(out), source="gs://weights/pg/tiny.npz")
  assert (out / "tiny.npz").read_bytes() == tiny_files["npz"]
  assert (out / "tokenizer.model").read_bytes() == tiny_files["tokenizer"]
  manifest = json.loads((out / "manifest.json").read_text())
  assert manifest["files"]["tiny.npz"]["source"] == "gs://weights/pg/tiny.npz"
  assert manifest["files"]["tiny.npz"]["sha256"] == hashlib.sha256(tiny_files["npz"]).hexdigest()
  assert json.loads((out / "model.json").read_text()) == {**configs.model_config("tiny-v2"), "name": "tiny-v2",
                                                           "checkpoint": "tiny.npz"}
  assert not [f for f in os.listdir(out) if "partial" in f or ".tmp" in f]
  gcs.gcs.reset()
  download_model("tiny-v2", str(out), source="gs://weights/pg/tiny.npz")  # verified in DIR: no request at all
  assert gcs.gcs.requests == []


def test_released_name_from_a_gcs_mirror(gcs, tiny_files, tmp_path):
  gcs.put_gcs("gs://mirror/pg/paligemma-3b-mix-448/paligemma-3b-mix-448.f16.npz", tiny_files["npz"])
  download_model("paligemma-3b-mix-448", str(tmp_path / "m"), source="gcs", dtype="float16",
                 gcs_mirror="gs://mirror/pg")
  assert (tmp_path / "m" / "paligemma-3b-mix-448.f16.npz").read_bytes() == tiny_files["npz"]


def test_model_directory_on_gcs_as_source(gcs, tiny_files, tmp_path):
  """A gs:// model directory (e.g. an earlier download) brings its model.json and tokenizer along."""
  download_model("tiny-v2", "gs://models/tiny", source="gs://weights/pg/tiny.npz", cache_dir=str(tmp_path / "c"))
  out = tmp_path / "copy"
  download_model("gs://models/tiny/tiny.npz", str(out))
  assert json.loads((out / "model.json").read_text())["name"] == "tiny-v2"
  download_model("gs://models/tiny", str(tmp_path / "copy2"))  # the directory stands for its checkpoint
  assert (tmp_path / "copy2" / "tiny.npz").read_bytes() == tiny_files["npz"]
  gcs.gcs.reset()
  download_model("gs://models/tiny/tiny.npz", str(out))  # a re-run asks GCS for nothing
  assert gcs.gcs.requests == []
  assert json.loads((out / "model.json").read_text())["name"] == "tiny-v2"
  assert json.loads((out / "manifest.json").read_text())["files"]["tokenizer.model"]["source"] == (
      "gs://models/tiny/tokenizer.model")


def test_corrupted_object_is_retried_then_a_clear_error(gcs, tiny_files, tmp_path):
  gcs.gcs.faults.tamper["/weights/"] = 1
  download_model("tiny-v2", str(tmp_path / "a"), source="gs://weights/pg/tiny.npz")
  assert (tmp_path / "a" / "tiny.npz").read_bytes() == tiny_files["npz"]
  assert len(gcs.gcs.media) == 3  # tampered checkpoint, the checkpoint again, the tokenizer

  gcs.gcs.faults.tamper["/weights/"] = -1
  with pytest.raises(ChecksumError, match=r"gs://weights/pg/tiny.npz failed its checksum 2 times.*crc32c"):
    download_model("tiny-v2", str(tmp_path / "b"), source="gs://weights/pg/tiny.npz", retries=2)
  assert not os.path.exists(tmp_path / "b" / "tiny.npz")


def test_missing_object_is_a_clear_error(gcs, tmp_path):
  with pytest.raises(DownloadError, match=r"gs://weights/pg/nope.npz does not exist"):
    download_model("tiny-v2", str(tmp_path / "m"), source="gs://weights/pg/nope.npz")


def test_output_to_a_missing_bucket_is_a_clear_error(gcs, tmp_path):
  with pytest.raises(DownloadError, match=r"bucket gs://no-such-bucket does not exist"):
    download_model("tiny-v2", "gs://no-such-bucket/m", source="gs://weights/pg/tiny.npz", cache_dir=str(tmp_path))


def test_upload_to_gcs_output_and_read_back(gcs, tiny_files, tmp_path):
  out = "gs://models/run-1/base"
  download_model("tiny-v2", out, source="gs://weights/pg/tiny.npz", cache_dir=str(tmp_path / "cache"))
  bucket = gcs.gcs_client().bucket("models")
  assert bucket.blob("run-1/base/tiny.npz").download_as_bytes() == tiny_files["npz"]
  assert bucket.blob("run-1/base/tokenizer.model").download_as_bytes() == tiny_files["tokenizer"]
  manifest = json.loads(bucket.blob("run-1/base/manifest.json").download_as_text())
  model_json = bucket.blob("run-1/base/model.json").download_as_bytes()
  assert manifest["files"]["model.json"]["sha256"] == hashlib.sha256(model_json).hexdigest()
  assert json.loads(model_json)["checkpoint"] == "tiny.npz"

  # Again: the objects are verified by their crc32c; nothing is downloaded or uploaded.
  gcs.gcs.reset()
  download_model("tiny-v2", out, source="gs://weights/pg/tiny.npz", cache_dir=str(tmp_path / "other-cache"))
  assert [path for path, _ in gcs.gcs.media if not path.endswith(("manifest.json", "model.json"))] == []
  writes = [r for r in gcs.gcs.requests if r["method"] in ("POST", "PUT")]
  assert len(writes) == 1  # the manifest, rewritten with this run's time; the other objects are kept


@pytest.mark.slow
def test_killed_download_resumes_from_its_journal(gcs, make_npz, tmp_path):
  """A preempted CLI (SIGKILL mid-download) resumes: the next run reads only the chunks not yet on disk."""
  data = make_npz(5.5)
  gcs.put_gcs("gs://weights/pg/six.npz", data)
  gcs.gcs.reset()
  release = threading.Event()
  gcs.gcs.stall_after = (3, release)
  out = tmp_path / "m"
  args = ["--model", "tiny-v2", "--source", "gs://weights/pg/six.npz", "--output", str(out), "--gcs-chunk-mib", "1"]
  proc = subprocess.Popen([sys.executable, "-m", "components.download", *args], cwd=REPO_ROOT, env=gcs.env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  journal = out / "six.npz.partial.json"
  deadline = time.time() + 60
  while time.time() < deadline:
    if journal.exists() and len(json.loads(journal.read_text() or "{}").get("done", [])) == 3:
      break
    time.sleep(0.1)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  release.set()
  while len(gcs.gcs.media) < gcs.gcs.media_started:  # let the held reads finish (into a closed socket)
    time.sleep(0.05)
  done = sorted(json.loads(journal.read_text())["done"])
  assert len(done) == 3
  gcs.gcs.reset()

  result = gcs.run_cli(*args)
  assert result.returncode == 0, result.stderr
  assert (out / "six.npz").read_bytes() == data
  assert chunk_starts(gcs.gcs.media, "six.npz") == sorted(set(range(0, len(data), MiB)) - set(done))
  assert "resuming gs://weights/pg/six.npz: 3.0 MiB" in result.stderr
  assert not journal.exists()


def test_too_little_disk_is_a_clear_error(gcs, tmp_path, monkeypatch):
  import collections
  import shutil

  usage = collections.namedtuple("usage", "total used free")
  real = shutil.disk_usage
  monkeypatch.setattr("components.download.gcs.shutil.disk_usage",
                      lambda path: usage(*real(path)[:2], 1000) if str(tmp_path) in str(path) else real(path))
  with pytest.raises(DownloadError, match=r"needs [\d.]+ KiB but .* has 1000 B free"):
    download_model("tiny-v2", str(tmp_path / "m"), source="gs://weights/pg/tiny.npz")


def test_big_file_is_uploaded_in_resumable_chunks(gcs, make_npz, tiny_files, tmp_path, monkeypatch):
  monkeypatch.setattr("components.download.gcs.CHUNK_BYTES", 2 * MiB)  # 55 GB uploads go in 64 MiB chunks
  data = make_npz(9.0)  # above the client's 8 MiB one-shot limit
  src = tmp_path / "src"
  src.mkdir()
  (src / "big.npz").write_bytes(data)
  (src / "tokenizer.model").write_bytes(tiny_files["tokenizer"])
  download_model("tiny-v2", "gs://models/big", source=str(src / "big.npz"), cache_dir=str(tmp_path / "c"))
  assert gcs.gcs_client().bucket("models").blob("big/big.npz").download_as_bytes() == data
  puts = [r for r in gcs.gcs.requests if r["method"] == "PUT"]
  assert len(puts) == 5  # ceil(9 MiB / 2 MiB) chunks of one resumable upload
