"""components.common.resolve_checkpoint: the one reading of `--checkpoint` that evaluate and export share,
local and on an object store (fsspec's in-memory filesystem stands in for gs://: the same fsspec calls)."""
import json
import uuid

import fsspec
import pytest

from components.common import resolve_checkpoint


@pytest.fixture(params=["local", "memory"])
def root(request, tmp_path):
  if request.param == "local":
    yield str(tmp_path)
    return
  base = f"memory://ckpt-{uuid.uuid4().hex[:8]}"
  yield base
  fsspec.filesystem("memory").rm(base.removeprefix("memory://"), recursive=True)


def put(path, data=b"x"):
  with fsspec.open(path, "wb", auto_mkdir=True) as f:
    f.write(data)


def test_model_directory_resolves_to_the_npz_its_model_json_names(root):
  put(f"{root}/models/pg/model.json", json.dumps({"name": "pg", "checkpoint": "pg-3b.npz"}).encode())
  got = resolve_checkpoint(f"{root}/models/pg/")
  assert (got.kind, got.path, got.directory) == ("npz", f"{root}/models/pg/pg-3b.npz", f"{root}/models/pg")
  assert got.tokenizer == f"{root}/models/pg/tokenizer.model" and got.model_json == f"{root}/models/pg/model.json"
  assert resolve_checkpoint(f"{root}/models/pg/pg-3b.npz") == got


@pytest.mark.parametrize("marker", ["config.json", "checkpoints/000010/x"])
def test_workdir_is_recognised_even_with_a_model_json(root, marker):
  put(f"{root}/runs/7/{marker}")
  put(f"{root}/runs/7/model.json", json.dumps({"name": "pg"}).encode())  # a workdir has one, without `checkpoint`
  got = resolve_checkpoint(f"{root}/runs/7")
  assert (got.kind, got.path, got.directory) == ("workdir", f"{root}/runs/7", f"{root}/runs/7")


def test_model_json_without_checkpoint_and_unknown_paths_are_clear_errors(root):
  put(f"{root}/m/model.json", b"{}")
  with pytest.raises(ValueError, match="names no `checkpoint`"):
    resolve_checkpoint(f"{root}/m")
  with pytest.raises(FileNotFoundError, match="neither an .npz, a finetune workdir"):
    resolve_checkpoint(f"{root}/nothing-here")
