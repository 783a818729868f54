"""`evaluate run --checkpoint` reads what export reads: a model directory, its .npz, local or on an object
store (fsspec's in-memory filesystem stands in for gs://: the same fsspec calls as gcsfs)."""
import os
import uuid

import fsspec
import numpy as np

from components.evaluate.runner import load_checkpoint
from components.paligemma.checkpoint import flatten_params


def test_model_directory_npz_and_remote_copy_load_the_same(tiny_model_dir):
  local, local_cfg, local_tok = load_checkpoint(tiny_model_dir)
  base = f"memory://eval-{uuid.uuid4().hex[:8]}/model"
  mem = fsspec.filesystem("memory")
  try:
    for name in os.listdir(tiny_model_dir):
      mem.put_file(os.path.join(tiny_model_dir, name), f"{base.removeprefix('memory://')}/{name}")
    for path in (base, f"{base}/tiny.npz"):
      params, model_cfg, tokenizer = load_checkpoint(path)
      assert model_cfg == local_cfg and tokenizer.encode("detect cat") == local_tok.encode("detect cat")
      got, want = flatten_params(params), flatten_params(local)
      assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
  finally:
    mem.rm(base.removeprefix("memory://").split("/")[0], recursive=True)
