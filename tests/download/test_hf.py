"""Hugging Face hub downloads: huggingface_hub against a local server speaking the hub's API."""
import json
import os

import numpy as np
import pytest

from components.download import ChecksumError, DownloadError, download_model, parse
from components.download import hf as hf_download

REPO = "google/tiny-paligemma"


@pytest.fixture
def local_ckpt(tiny_files, tmp_path):
  path = tmp_path / "src" / "tiny.npz"
  path.parent.mkdir()
  path.write_bytes(tiny_files["npz"])
  return str(path)


@pytest.fixture
def hub(servers, tiny_files, make_npz):
  """A repo with the tokenizer and a 2 MiB safetensors-named blob (the transport does not look inside)."""
  servers.hub.add_repo(REPO, {"tokenizer.model": tiny_files["tokenizer"], "model.safetensors": make_npz(2.0),
                              "config.json": b'{"model_type": "paligemma"}'})
  return servers


def test_tokenizer_from_the_hub(hub, tiny_files, local_ckpt, tmp_path):
  out = tmp_path / "m"
  download_model("tiny-v2", str(out), source=local_ckpt, tokenizer=f"hf://{REPO}")
  assert (out / "tokenizer.model").read_bytes() == tiny_files["tokenizer"]
  assert json.loads((out / "manifest.json").read_text())["files"]["tokenizer.model"]["source"] == f"hf://{REPO}"
  # Only the tokenizer was fetched, by HEAD then GET on the resolve API.
  assert [(r["method"], r["path"].rsplit("/", 1)[1]) for r in hub.hub.requests if "/resolve/" in r["path"]] == [
      ("HEAD", "tokenizer.model"), ("GET", "tokenizer.model")]


def test_pinned_commit_in_cache_makes_no_request(hub, tiny_files, local_ckpt, tmp_path):
  commit = hub.hub.repos[REPO]["commit"]
  download_model("tiny-v2", str(tmp_path / "a"), source=local_ckpt, tokenizer=f"hf://{REPO}@{commit}")
  hub.hub.reset()
  download_model("tiny-v2", str(tmp_path / "b"), source=local_ckpt, tokenizer=f"hf://{REPO}@{commit}")
  assert [r for r in hub.hub.requests if "/resolve/" in r["path"]] == []
  assert (tmp_path / "b" / "tokenizer.model").read_bytes() == tiny_files["tokenizer"]


def test_dropped_connection_is_resumed_by_the_hub_client(hub, make_npz):
  # huggingface_hub writes in 10 MB chunks: drop past the first so that there is something to resume.
  data = make_npz(12.0)
  hub.hub.repos[REPO]["files"]["model.safetensors"] = data
  hub.hub.faults.drop_once["/model.safetensors"] = 11 * 2**20
  snap, commit = hf_download.snapshot(parse(f"hf://{REPO}"))
  hf_download.verify_snapshot(snap)
  with open(os.path.join(snap, "model.safetensors"), "rb") as f:
    assert f.read() == data
  assert commit == hub.hub.repos[REPO]["commit"]
  assert len(hub.hub.drops) == 1
  ranges = [r["range"] for r in hub.hub.data_requests() if r["path"].endswith("model.safetensors") and r["range"]]
  assert ranges == ["bytes=10485760-"]  # resumed after the 10 MB written, not restarted
  assert hub.hub.bytes_sent == len(data) - 10485760 + sum(len(d) for n, d in hub.hub.repos[REPO]["files"].items()
                                                          if n != "model.safetensors")


def test_corrupted_blob_is_detected_and_fetched_again(hub, tiny_files, local_ckpt, tmp_path, monkeypatch):
  hub.hub.faults.tamper["/tokenizer.model"] = 1
  download_model("tiny-v2", str(tmp_path / "a"), source=local_ckpt, tokenizer=f"hf://{REPO}")
  assert (tmp_path / "a" / "tokenizer.model").read_bytes() == tiny_files["tokenizer"]
  assert len([r for r in hub.hub.data_requests() if r["path"].endswith("tokenizer.model")]) == 2

  hub.hub.faults.tamper["/tokenizer.model"] = -1
  monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "fresh-hf-cache"))
  with pytest.raises(ChecksumError, match=r"failed its checksum 2 times.*does not match its hash"):
    download_model("tiny-v2", str(tmp_path / "b"), source=local_ckpt, tokenizer=f"hf://{REPO}", retries=2,
                   cache_dir=str(tmp_path))
  # The bad blob never stays in the cache.
  blobs = [f for _, _, fs in os.walk(tmp_path / "fresh-hf-cache") for f in fs if len(f) == 64]
  assert blobs == []


def test_gated_repo_without_token_is_a_clear_error(hub, tiny_files, local_ckpt, tmp_path, monkeypatch):
  hub.hub.add_repo("google/gated", {"tokenizer.model": tiny_files["tokenizer"]}, token="hf_secret_token_123")
  with pytest.raises(DownloadError, match=r"accept the model's licence at https://huggingface.co/google/gated.*"
                     r"HF_TOKEN"):
    download_model("tiny-v2", str(tmp_path / "a"), source=local_ckpt, tokenizer="hf://google/gated")

  monkeypatch.setenv("HF_TOKEN", "hf_secret_token_123")
  download_model("tiny-v2", str(tmp_path / "b"), source=local_ckpt, tokenizer="hf://google/gated")
  assert (tmp_path / "b" / "tokenizer.model").read_bytes() == tiny_files["tokenizer"]


def test_token_file(hub, tiny_files, local_ckpt, tmp_path):
  hub.hub.add_repo("google/gated", {"tokenizer.model": tiny_files["tokenizer"]}, token="hf_secret_token_123")
  token_file = tmp_path / "hf_token"
  token_file.write_text("hf_secret_token_123\n")
  download_model("tiny-v2", str(tmp_path / "b"), source=local_ckpt, tokenizer="hf://google/gated",
                 hf_credentials=str(token_file))
  resolves = [r for r in hub.hub.requests if "/resolve/" in r["path"]]
  assert resolves and all(r["authorization"] == "Bearer hf_secret_token_123" for r in resolves)


def test_unknown_repo_or_revision_is_a_clear_error(hub, local_ckpt, tmp_path):
  with pytest.raises(DownloadError, match=r"no repository google/nope.*check the name"):
    download_model("tiny-v2", str(tmp_path / "a"), source=local_ckpt, tokenizer="hf://google/nope")
  with pytest.raises(DownloadError, match=r"has no revision 'v9'"):
    download_model("tiny-v2", str(tmp_path / "a"), source=local_ckpt, tokenizer=f"hf://{REPO}@v9")


def test_unreachable_hub_is_a_network_failure_not_a_bad_repo(hub, tmp_path, monkeypatch):
  import socket

  import huggingface_hub.constants as hub_constants
  with socket.socket() as s:  # a port nobody listens on: the connection is refused
    s.bind(("127.0.0.1", 0))
    closed = f"http://127.0.0.1:{s.getsockname()[1]}"
  monkeypatch.setattr(hub_constants, "ENDPOINT", closed)
  monkeypatch.setattr(hub_constants, "HUGGINGFACE_CO_URL_TEMPLATE", closed + "/{repo_id}/resolve/{revision}/{filename}")
  monkeypatch.setattr("huggingface_hub.utils._http.time.sleep", lambda seconds: None)  # its 5 retries, at once
  with pytest.raises(DownloadError) as error:
    download_model(f"hf://{REPO}", str(tmp_path / "m"))
  message = str(error.value)
  assert f"network failure: cannot reach the Hugging Face hub at {closed}" in message, message
  assert "after 3 attempts" in message and "has no config.json" not in message
  monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
  with pytest.raises(DownloadError, match="not in the Hugging Face cache .* HF_HUB_OFFLINE is set"):
    download_model(f"hf://{REPO}", str(tmp_path / "m"))


# ------------------------------------------------------------------------- transformers checkpoint -> .npz
def tiny_transformers_paligemma(out_dir):
  """A tiny random `PaliGemmaForConditionalGeneration` (Gemma 2 text, SigLIP vision) saved as safetensors
  shards + `model.safetensors.index.json`, as the released repos are."""
  import torch
  from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration

  config = PaliGemmaConfig(
      vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, patch_size=14, image_size=56, projection_dim=64),
      text_config=dict(model_type="gemma2", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=320,
                       final_logit_softcapping=30.0, attn_logit_softcapping=50.0, query_pre_attn_scalar=16),
      image_token_index=300, projection_dim=64, hidden_size=64)
  torch.manual_seed(0)
  model = PaliGemmaForConditionalGeneration(config).eval()
  model.save_pretrained(out_dir, safe_serialization=True, max_shard_size="100KB")  # sharded, with an index
  return {name: open(os.path.join(out_dir, name), "rb").read() for name in os.listdir(out_dir)}


@pytest.mark.slow
def test_transformers_checkpoint_is_converted_to_big_vision_npz(servers, tiny_files, tmp_path):
  import components.paligemma as paligemma
  if not hasattr(paligemma, "from_hf"):
    pytest.skip("components.paligemma.from_hf (the transformers -> big_vision converter) is not there yet")
  repo_files = tiny_transformers_paligemma(tmp_path / "hf_model")
  repo_files["tokenizer.model"] = tiny_files["tokenizer"]
  servers.hub.add_repo("google/paligemma2-tiny", repo_files)

  assert len([n for n in repo_files if n.endswith(".safetensors")]) > 1
  out = tmp_path / "m"
  download_model("hf://google/paligemma2-tiny", str(out), dtype="float32")

  model_json = json.loads((out / "model.json").read_text())
  assert model_json["name"] == "paligemma2-tiny" and model_json["checkpoint"] == "paligemma2-tiny.npz"
  params, model_cfg = paligemma.from_hf(str(tmp_path / "hf_model"))
  assert {k: v for k, v in model_json.items() if k not in ("name", "checkpoint")} == model_cfg
  loaded = paligemma.flatten_params(paligemma.load(str(out / "paligemma2-tiny.npz"), model_cfg))
  expected = paligemma.flatten_params(params)
  assert sorted(loaded) == sorted(expected)
  for name in expected:
    np.testing.assert_array_equal(loaded[name], np.asarray(expected[name], np.float32), err_msg=name)
  manifest = json.loads((out / "manifest.json").read_text())
  assert manifest["files"]["paligemma2-tiny.npz"]["revision"] == servers.hub.repos["google/paligemma2-tiny"]["commit"]
  assert manifest["files"]["tokenizer.model"]["source"] == "hf://google/paligemma2-tiny"
  assert (out / "tokenizer.model").read_bytes() == tiny_files["tokenizer"]

  servers.hub.reset()  # again: everything in DIR is verified, nothing is asked of the hub or converted
  model_json_before = (out / "model.json").read_bytes()
  download_model("hf://google/paligemma2-tiny", str(out), dtype="float32")
  assert [r for r in servers.hub.requests if "/resolve/" in r["path"]] == []
  assert (out / "model.json").read_bytes() == model_json_before
