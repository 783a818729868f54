"""The CLI as a user runs it: a subprocess against the local servers. Credentials never leak."""
import json
import os

import pytest

from components.download.__main__ import main

NAME = "paligemma2-3b-pt-224"
HANDLE = f"google/paligemma-2/jax/{NAME}/1"
FILE = f"{NAME}.b16.npz"
HF_TOKEN = "hf_tok3n-sup3r-s3cret-9d1e"


@pytest.fixture
def published(servers, tiny_files):
  servers.kaggle.models[HANDLE] = {FILE: tiny_files["npz"]}
  servers.hub.add_repo("google/paligemma2-3b-pt-224", {"tokenizer.model": tiny_files["tokenizer"]}, token=HF_TOKEN)
  servers.put_gcs("gs://big_vision/paligemma_tokenizer.model", tiny_files["tokenizer"])
  servers.gcs_client().create_bucket("team-models")
  return servers


def secret_hits(root, secrets, skip):
  """Every (file, secret) where a secret's text appears in a file under root."""
  hits = []
  for dirpath, _, names in os.walk(root):
    for name in names:
      path = os.path.join(dirpath, name)
      if path in skip or os.path.islink(path):
        continue
      data = open(path, "rb").read()
      hits += [(path, s) for s in secrets if s.encode() in data]
  return hits


@pytest.mark.slow
def test_credentials_never_appear_in_output_logs_or_files(published, tmp_path):
  kaggle_key = published.kaggle.key
  creds = tmp_path / "secrets" / "kaggle.json"
  creds.parent.mkdir()
  creds.write_text(json.dumps({"username": published.kaggle.user, "key": kaggle_key}))
  env = {"HF_TOKEN": HF_TOKEN, "KAGGLEHUB_VERBOSITY": "debug", "KAGGLE_LOGGING_ENABLED": "1"}
  runs = [
      # Kaggle key from a mounted file, gated tokenizer with HF_TOKEN, output to gs://.
      published.run_cli("--model", NAME, "--output", "gs://team-models/base", "--kaggle-credentials", str(creds),
                        "--tokenizer", "hf://google/paligemma2-3b-pt-224", "--cache-dir", str(tmp_path / "staging"),
                        env=env),
      # Kaggle key from the environment, to a local directory.
      published.run_cli("--model", NAME, "--output", str(tmp_path / "local"),
                        env={**env, "KAGGLE_USERNAME": published.kaggle.user, "KAGGLE_KEY": kaggle_key}),
  ]
  for run in runs:
    assert run.returncode == 0, run.stderr
  # A refusal (licence not accepted) prints an error that names the fix, still without the key.
  published.kaggle.licence_not_accepted.add(HANDLE)
  denied = published.run_cli("--model", NAME, "--output", str(tmp_path / "denied"), "--kaggle-credentials",
                             str(creds), env={**env, "KAGGLEHUB_CACHE": str(tmp_path / "empty-cache")})
  assert denied.returncode == 1
  assert "HTTP 403" in denied.stderr and "Accept the model's licence" in denied.stderr
  runs.append(denied)

  secrets = [kaggle_key, HF_TOKEN, "s1gn3d"]  # and the signature of the storage URL Kaggle redirects to
  for run in runs:
    assert [s for s in secrets if s in run.stdout + run.stderr] == []
  assert secret_hits(tmp_path, secrets, skip={str(creds)}) == []
  assert os.path.exists(tmp_path / "home" / ".kaggle" / "logs" / "kagglehub.log")  # kagglehub's own log was scanned
  bucket = published.gcs_client().bucket("team-models")
  objects = {b.name: b.download_as_bytes() for b in bucket.list_blobs()}
  assert sorted(objects) == ["base/manifest.json", "base/model.json", f"base/{FILE}", "base/tokenizer.model"]
  assert [n for n, data in objects.items() for s in secrets if s.encode() in data] == []
  # The requests did carry them: the scan looked for the right strings.
  assert any(r["authorization"] == f"Bearer {HF_TOKEN}" for r in published.hub.requests)


def test_help_and_clear_errors(published, tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_info:
    main(["--help"])
  assert exit_info.value.code == 0
  assert "--model" in capsys.readouterr().out
  assert main(["--model", "paligemma9-1b-pt-224", "--output", str(tmp_path / "m")]) == 1
  assert "error: unknown model 'paligemma9-1b-pt-224'" in capsys.readouterr().err
  assert main(["--model", "tiny-v2", "--output", str(tmp_path / "m")]) == 1
  assert "tiny-v2 is a configuration, not a released checkpoint" in capsys.readouterr().err
  assert main(["--model", "kaggle://google/paligemma", "--output", str(tmp_path / "m")]) == 1
  assert "bad Kaggle URI" in capsys.readouterr().err
  assert main(["--model", "paligemma2-3b-pt-224", "--output", str(tmp_path / "m"), "--retries", "0"]) == 1
  assert "must be at least 1" in capsys.readouterr().err
