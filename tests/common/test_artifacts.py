"""`components.common.artifacts.location`: where a step reads and writes a KFP artifact, per URI scheme.

KFP gives `artifact.path` under a local mount for minio:// and s3:// pipeline roots (the launcher uploads it
after the task); here the mount prefix is pointed at a temporary folder, as the launcher's would be. The
component bodies of download and convert must write there, and never into a local folder named `minio:`."""
import json

import numpy as np
import pytest
from kfp.dsl import Dataset, Model
from kfp.dsl.types import artifact_types
from PIL import Image

from components.common.artifacts import location


@pytest.fixture
def mounts(tmp_path, monkeypatch):
  """The local mounts KFP's launcher provides for minio:// and s3:// artifacts, as temporary folders."""
  for name in ("minio", "s3"):
    monkeypatch.setattr(artifact_types, f"_{name.upper()}_LOCAL_MOUNT_PREFIX", f"{tmp_path / name}/")
  monkeypatch.chdir(tmp_path)
  return tmp_path


@pytest.mark.parametrize("uri, gcs_direct, want", [
    ("gs://bucket/root/dataset", True, "gs://bucket/root/dataset"),
    ("gs://bucket/root/dataset", False, "/gcs/bucket/root/dataset"),
    ("/local/root/dataset", True, "/local/root/dataset"),
    ("file:///local/root/dataset", True, "/local/root/dataset"),
])
def test_gcs_and_local_uris(uri, gcs_direct, want):
  assert location(Dataset(uri=uri), gcs_direct=gcs_direct) == want


def test_other_schemes_use_the_path_kfp_mounts(mounts):
  assert location(Dataset(uri="minio://mlpipeline/v2/artifacts/run/convert/dataset")) == \
      f"{mounts}/minio/mlpipeline/v2/artifacts/run/convert/dataset"
  assert location(Model(uri="s3://bucket/run/model")) == f"{mounts}/s3/bucket/run/model"


def test_a_scheme_without_a_local_path_is_a_clear_error():
  with pytest.raises(ValueError, match="at fake://bucket/x: KFP gives no local path for that scheme"):
    location(Dataset(name="dataset", uri="fake://bucket/x"))


def _write_jsonl_dataset(root):
  root.mkdir()
  rows = []
  for i, colour in enumerate(((200, 0, 0), (0, 200, 0), (0, 0, 200))):
    Image.fromarray(np.full((24, 32, 3), colour, np.uint8)).save(root / f"{i}.png")
    rows.append({"image": f"{i}.png", "prefix": "caption en", "suffix": f"colour {i}"})
  (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  return root


def test_convert_component_writes_into_the_minio_mount(mounts):
  from components.convert import list_shards, read_shard
  from components.convert.component import _convert_dataset

  source = _write_jsonl_dataset(mounts / "src")
  dataset = Dataset(uri="minio://mlpipeline/v2/artifacts/run/convert/dataset")
  _convert_dataset(str(source), "paligemma-jsonl", "caption", dataset, splits="train=1", workers=1)
  written = mounts / "minio" / "mlpipeline" / "v2" / "artifacts" / "run" / "convert" / "dataset"
  # A KFP artifact: the plain layout (no links, which the launcher's upload would not follow).
  assert len((written / "train.jsonl").read_text().splitlines()) == 3
  assert sum(len(read_shard(p)) for p in list_shards(str(written), "train")) == 3
  assert (written / "report.json").is_file() and not any(p.is_symlink() for p in written.rglob("*"))
  assert dataset.metadata["counts"]["train"] == 3
  assert not (mounts / "minio:").exists()


def test_download_component_writes_into_the_minio_mount(mounts):
  from components import paligemma
  from components.download.component import _download_model_dir
  from components.paligemma.checkpoint import param_shapes, unflatten_params

  src = mounts / "src"
  src.mkdir()
  cfg = paligemma.configs.model_config("tiny-v2")
  paligemma.save(unflatten_params({n: np.zeros(s, np.float32) for n, s in param_shapes(cfg).items()}),
                 str(src / "tiny.npz"))
  paligemma.train_small_tokenizer(str(src / "tokenizer.model"), vocab_size=1500)
  model_dir = Model(uri="minio://mlpipeline/v2/artifacts/run/download/model_dir")
  _download_model_dir("tiny-v2", model_dir, source=str(src / "tiny.npz"))
  written = mounts / "minio" / "mlpipeline" / "v2" / "artifacts" / "run" / "download" / "model_dir"
  assert json.loads((written / "model.json").read_text())["checkpoint"] == "tiny.npz"
  assert {"tiny.npz", "tokenizer.model", "manifest.json"} <= {p.name for p in written.iterdir()}
  assert not (mounts / "minio:").exists()
