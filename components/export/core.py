"""The export step: a finetune workdir, a model directory or a big_vision `.npz` -> a big_vision `.npz` or a transformers
checkpoint, local or gs://, written atomically with a manifest; optionally registered in Vertex AI.

    export(ExportConfig(checkpoint="gs://b/runs/7", format="hf", output="gs://b/models/7", dtype="bfloat16"))

Output directory:
  npz: model.npz, model.json (the model_cfg, "name", "checkpoint"), tokenizer.model, manifest.json:
       a model directory (docs/ARCHITECTURE.md) that finetune, evaluate and export read again.
  hf:  config.json, generation_config.json, model*.safetensors, tokenizer.json, tokenizer_config.json,
       tokenizer.model, processor_config.json, preprocessor_config.json, manifest.json.
  Both, for a model with a mask codec (segmentation: the source's model.json names one, `vqvae`): the codec
  .npz (its own file name) and model.json naming it (`vqvae`; for hf: model_cfg, "name", "vqvae"), so that
  evaluate finds it when the export is re-scored (the pipeline's champion) or re-exported.
manifest.json: format, dtype, package version, source (checkpoint, kind, which, sha256 of its config and
of the dataset's split files where known), model_cfg, metrics (training: the last metrics.jsonl values;
evaluation: the given metrics file), and every file's size and sha256.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import pathlib
from typing import Any

import ml_dtypes
import numpy as np

import components
from components import paligemma
from components.common import datasets
from components.common.atomic import write_json_atomic
from components.common.checkpoints import Checkpoint, find_vqvae, join, read_model_json, resolve_checkpoint
from components.common.extras import require
from components.common.workdir import read_bytes
from components.export import processor, publish, registry
from components.export.formats import DTYPE_NAMES, FORMATS
from components.paligemma import configs

log = logging.getLogger(__name__)

DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16), "float16": np.dtype(np.float16)}
assert tuple(DTYPES) == DTYPE_NAMES
NPZ_NAME = "model.npz"


@dataclasses.dataclass(frozen=True)
class ExportConfig:
  checkpoint: str  # finetune workdir, model directory, or .npz (components.common.resolve_checkpoint)
  format: str  # "npz" or "hf"
  output: str  # directory: local path or gs://
  dtype: str | None = None  # None keeps the source's dtypes
  which: str = "latest"  # workdir checkpoint: "latest", "best" or a step
  tokenizer: str | None = None  # None: tokenizer.model beside the checkpoint
  metrics: str | None = None  # an evaluation's metrics.json to record in the manifest
  register: bool = False
  dry_run: bool = False  # print the registry request instead of sending it
  display_name: str | None = None
  serving_container: str | None = None
  labels: dict = dataclasses.field(default_factory=dict)
  project: str | None = None
  location: str | None = None


@dataclasses.dataclass
class _Source:
  params: dict
  model_cfg: dict
  tokenizer: str
  name: str  # model.json's "name"
  info: dict  # for the manifest
  metrics: dict | None
  vqvae: str | None = None  # the mask codec that goes with the model (segmentation), or None


def export(cfg: ExportConfig) -> dict:
  """Runs the export; returns the manifest (plus "registry": the request or resource name when registering)."""
  if cfg.format not in FORMATS:
    raise ValueError(f"--format {cfg.format!r}; choose one of {FORMATS}")
  if cfg.dtype is not None and cfg.dtype not in DTYPES:
    raise ValueError(f"--dtype {cfg.dtype!r}; choose one of {', '.join(DTYPES)}")
  if cfg.format == "hf":  # before the slow part: the processor files need transformers
    require("transformers", extra="hf", needed_by=processor.NEEDED_BY)
  if cfg.dry_run and not cfg.register:
    raise ValueError("--dry-run only replaces the Vertex AI registry upload with printing its request; give "
                     "--register too, or leave --dry-run out to export")
  request = _registry_request(cfg) if cfg.register else None  # a bad request fails before the slow part
  evaluation = _read_evaluation(cfg.metrics)
  source = _load_source(cfg.checkpoint, cfg.which, cfg.tokenizer)
  if cfg.dtype is not None:
    _cast_leaves(source.params, DTYPES[cfg.dtype])
  with publish.atomic_directory(cfg.output) as staging:
    if cfg.format == "npz":
      _write_npz(source, staging)
    else:
      _write_hf(source, staging)
    manifest = _manifest(cfg, source, evaluation, staging)
    write_json_atomic(staging / publish.MANIFEST, manifest)
  log.info("exported %s as %s to %s", cfg.checkpoint, cfg.format, cfg.output)
  if request is not None:
    manifest = {**manifest, "registry": registry.register(request, dry_run=cfg.dry_run)}
  return manifest


def _registry_request(cfg: ExportConfig) -> dict:
  if not cfg.dry_run and not cfg.output.startswith("gs://"):
    raise ValueError(f"--register uploads to Vertex AI Model Registry, which reads gs:// only; --output "
                     f"{cfg.output} is not (use --dry-run to only print the request)")
  name = pathlib.PurePosixPath(cfg.output.rstrip("/")).name
  return registry.upload_request(
      artifact_uri=cfg.output, export_format=cfg.format, display_name=cfg.display_name or f"paligemma-{name}",
      serving_container=cfg.serving_container, description=f"PaliGemma exported from {cfg.checkpoint}",
      labels={"format": cfg.format, "dtype": cfg.dtype or "source", "package-version": _version(), **cfg.labels},
      project=cfg.project, location=cfg.location)


def _version() -> str:
  return components.__version__


def _read_evaluation(path: str | None) -> dict | None:
  if not path:
    return None
  data = read_bytes(path)
  if data is None:
    raise FileNotFoundError(f"--metrics {path} not found (an evaluation directory's metrics.json)")
  return json.loads(data)


# ---------------------------------------------------------------------------------------------- source
def _load_source(checkpoint: str, which: str, tokenizer: str | None = None) -> _Source:
  resolved = resolve_checkpoint(checkpoint, tokenizer)  # the same reading of --checkpoint as evaluate's
  if read_bytes(resolved.tokenizer) is None:
    raise FileNotFoundError(f"{resolved.tokenizer} not found: the export ships the tokenizer the model was "
                            "trained with; give --tokenizer or put tokenizer.model beside the checkpoint")
  model_json = read_model_json(resolved)  # a bare .npz: inferred from its array shapes
  name = model_json.get("name") or "paligemma"
  vqvae = find_vqvae(resolved, model_json)
  if vqvae is not None and read_bytes(vqvae) is None:  # before the slow part
    raise FileNotFoundError(f"{vqvae} not found: {resolved.model_json} names it as the model's mask codec "
                            "(`vqvae`), which the export ships; put it back or fix model.json")
  source = _load_weights(resolved, which, model_json, name)
  source.vqvae = vqvae
  return source


def _load_weights(resolved: Checkpoint, which: str, model_json: dict, name: str) -> _Source:
  directory = resolved.directory
  if resolved.kind == "npz":
    model_cfg = {k: v for k, v in model_json.items() if k in ("llm", "img")}
    params = paligemma.load(resolved.path, model_cfg)  # stored dtypes kept: an npz export is bit-identical
    upstream = json.loads(read_bytes(join(directory, "manifest.json")) or b"{}")
    info = {"checkpoint": resolved.path, "kind": "npz",
            "sha256": upstream.get("files", {}).get(resolved.path.rsplit("/", 1)[-1], {}).get("sha256")}
    return _Source(params, model_cfg, resolved.tokenizer, name, info, None)
  if resolved.kind == "hf":  # an earlier `--format hf` export
    params, model_cfg = paligemma.from_hf(resolved.path)
    return _Source(params, model_cfg, resolved.tokenizer, name, {"checkpoint": resolved.path, "kind": "hf"}, None)

  from components.common.workdir import load_trained_params  # imported here: orbax is slow to import

  params, model_cfg = load_trained_params(resolved.path, which)
  config = read_bytes(join(directory, "config.json"))
  info = {"checkpoint": resolved.path, "kind": "workdir", "which": which,
          "config_sha256": None if config is None else hashlib.sha256(config).hexdigest(),
          "dataset": _dataset_info(json.loads(config).get("data_dir") if config else None)}
  return _Source(params, model_cfg, resolved.tokenizer, name, info, _last_metrics(join(directory, "metrics.jsonl")))


def _dataset_info(data_dir: str | None) -> dict | None:
  """sha256 of the dataset's split files, which name every image and label it was trained on, all of one
  version of the dataset directory (`version`: its name, None for an unversioned directory)."""
  if not data_dir:
    return None
  files = {}
  with datasets.pin(data_dir) as dataset:
    for split in ("train", "valid", "test"):
      data = read_bytes(join(dataset.root, f"{split}.jsonl"))
      if data is not None:
        files[f"{split}.jsonl"] = hashlib.sha256(data).hexdigest()
  return {"uri": data_dir, "version": dataset.version, "sha256": files or None}


def _last_metrics(path: str) -> dict | None:
  data = read_bytes(path)
  if not data:
    return None
  last: dict[str, Any] = {}
  for line in data.decode().splitlines():
    if line.strip():
      last.update(json.loads(line))
  return last


def _cast_leaves(tree: dict, dtype: np.dtype) -> None:
  """Casts in place, one leaf at a time, so the model is never held twice."""
  for key, value in tree.items():
    if isinstance(value, dict):
      _cast_leaves(value, dtype)
    else:
      tree[key] = np.asarray(value).astype(dtype, copy=False)


# ---------------------------------------------------------------------------------------------- writing
def _copy_tokenizer(source: _Source, path: pathlib.Path) -> None:
  path.write_bytes(read_bytes(source.tokenizer))


def _copy_vqvae(source: _Source, staging: pathlib.Path) -> dict:
  """The mask codec beside the weights, under its own file name (`vqvae.npz` if that is taken); returns
  model.json's `vqvae` entry ({} without a codec)."""
  if source.vqvae is None:
    return {}
  name = source.vqvae.rstrip("/").rsplit("/", 1)[-1]
  if (staging / name).exists() or name == NPZ_NAME:
    name = "vqvae.npz"
  (staging / name).write_bytes(read_bytes(source.vqvae))
  return {"vqvae": name}


def _write_npz(source: _Source, staging: pathlib.Path) -> None:
  paligemma.save(source.params, str(staging / NPZ_NAME))
  model_json = {**source.model_cfg, "name": source.name, "checkpoint": NPZ_NAME, **_copy_vqvae(source, staging)}
  write_json_atomic(staging / "model.json", model_json)
  _copy_tokenizer(source, staging / "tokenizer.model")


def _write_hf(source: _Source, staging: pathlib.Path) -> None:
  paligemma.to_hf(source.params, source.model_cfg, staging)
  tokenizer = staging / "tokenizer.model"
  _copy_tokenizer(source, tokenizer)
  processor.write_processor(tokenizer, staging, image_size=configs.image_size(source.model_cfg),
                  num_image_tokens=configs.num_image_tokens(source.model_cfg))
  codec = _copy_vqvae(source, staging)
  if codec:  # a transformers directory has no model.json otherwise: its config.json describes the model
    write_json_atomic(staging / "model.json", {**source.model_cfg, "name": source.name, **codec})


def _sha256(path: pathlib.Path) -> str:
  with open(path, "rb") as f:
    return hashlib.file_digest(f, "sha256").hexdigest()


def _manifest(cfg: ExportConfig, source: _Source, evaluation: dict | None, staging: pathlib.Path) -> dict:
  files = {str(p.relative_to(staging)): {"size": p.stat().st_size, "sha256": _sha256(p)}
           for p in sorted(staging.rglob("*")) if p.is_file() and p.name != publish.MANIFEST}
  return {
      "format": cfg.format, "dtype": cfg.dtype or "source", "name": source.name,
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "package": {"name": "paligemma-pipelines", "version": _version()},
      "source": source.info, "model_cfg": source.model_cfg,
      "metrics": {"training": source.metrics, "evaluation": evaluation},
      "files": files,
  }
