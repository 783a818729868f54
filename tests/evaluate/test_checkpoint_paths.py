"""`evaluate run --checkpoint` reads what export reads: a model directory, its .npz, local or on an object
store (fsspec's in-memory filesystem stands in for gs://: the same fsspec calls as gcsfs)."""
import os
import uuid

import fsspec
import numpy as np
import pytest

from components.evaluate.runner import load_checkpoint
from components.paligemma import configs
from components.paligemma.checkpoint import flatten_params


def test_model_directory_npz_and_remote_copy_load_the_same(tiny_model_dir):
  local, local_cfg, local_tok, meta = load_checkpoint(tiny_model_dir)
  assert meta["name"] == "tiny-v1"
  base = f"memory://eval-{uuid.uuid4().hex[:8]}/model"
  mem = fsspec.filesystem("memory")
  try:
    for name in os.listdir(tiny_model_dir):
      mem.put_file(os.path.join(tiny_model_dir, name), f"{base.removeprefix('memory://')}/{name}")
    for path in (base, f"{base}/tiny.npz"):
      params, model_cfg, tokenizer, _ = load_checkpoint(path)
      assert model_cfg == local_cfg and tokenizer.encode("detect cat") == local_tok.encode("detect cat")
      got, want = flatten_params(params), flatten_params(local)
      assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
  finally:
    mem.rm(base.removeprefix("memory://").split("/")[0], recursive=True)


def test_a_bare_npz_is_described_by_its_shapes_and_takes_a_tokenizer(tiny_model_dir, tmp_path):
  """No model.json beside the .npz: the configuration comes from its array shapes; --tokenizer from elsewhere."""
  local, local_cfg, _, _ = load_checkpoint(tiny_model_dir)
  base = f"memory://eval-{uuid.uuid4().hex[:8]}"
  mem = fsspec.filesystem("memory")
  try:
    mem.put_file(os.path.join(tiny_model_dir, "tiny.npz"), f"{base.removeprefix('memory://')}/bare/tiny.npz")
    with pytest.raises(FileNotFoundError, match="give --tokenizer"):
      load_checkpoint(f"{base}/bare/tiny.npz")
    params, model_cfg, tokenizer, meta = load_checkpoint(f"{base}/bare/tiny.npz",
                                                          tokenizer=os.path.join(tiny_model_dir, "tokenizer.model"))
  finally:
    mem.rm(base.removeprefix("memory://"), recursive=True)
  # tiny-v1's geometry with the small tokenizer's vocabulary: a custom name; what shapes show is the same.
  assert meta["name"] == "paligemma-custom-w64-d2-v2048-img32x2-56px" and meta["checkpoint"] == "tiny.npz"
  for tower, resolve in (("llm", configs.resolve_llm), ("img", configs.resolve_img)):
    want = resolve(local_cfg[tower])
    assert {k: v for k, v in resolve(model_cfg[tower]).items() if k != "cache_dtype"} == {
        k: v for k, v in want.items() if k != "cache_dtype"}
  got, want = flatten_params(params), flatten_params(local)
  assert all(np.array_equal(got[k], want[k]) for k in want) and tokenizer.vocab_size == 2048
