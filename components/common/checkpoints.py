"""What a `--checkpoint` names, decided the same way by every step that reads one (evaluate, export).

    resolve_checkpoint("gs://b/runs/7")               -> Checkpoint(kind="workdir", path="gs://b/runs/7", ...)
    resolve_checkpoint("models/pg2")                  -> Checkpoint(kind="npz", path="models/pg2/pg2-3b.npz", ...)
    resolve_checkpoint("models/pg2/pg2-3b.npz")       -> the same

Accepted, local or any fsspec URL (gs:// through gcsfs), checked in this order:
- an `.npz` file: `model.json` and `tokenizer.model` are looked up in its directory; without a model.json
  there, `read_model_json` infers the configuration from the file's array shapes;
- a transformers directory (`export --format hf`): `config.json` of `model_type` "paligemma" beside its
  safetensors files, with `tokenizer.model` (which that export writes);
- a finetune workdir: a directory with `checkpoints/` or `config.json` (docs/ARCHITECTURE.md "A workdir");
- a model directory: a directory with `model.json`, whose `checkpoint` key names the `.npz` inside it
  (docs/ARCHITECTURE.md "A model directory").
Only where the files are is decided here (and what model.json says); loading stays with each step.
"""
from __future__ import annotations

import dataclasses
import json
import logging

import fsspec

log = logging.getLogger(__name__)

MODEL_JSON = "model.json"
TOKENIZER = "tokenizer.model"
# The released mask codec (segmentation's `<segNNN>` tokens): what download fetches and convert encodes with
# when a segment run names none.
RELEASED_VQVAE = "gs://big_vision/paligemma/vae-oid.npz"


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  kind: str  # "workdir", "npz" or "hf"
  path: str  # the workdir, the .npz file, or the transformers directory
  directory: str  # holds model.json (and tokenizer.model unless one was given)
  tokenizer: str  # the tokenizer given, else tokenizer.model in `directory`

  @property
  def model_json(self) -> str:
    return join(self.directory, MODEL_JSON)


def join(directory: str, name: str) -> str:
  return f"{directory.rstrip('/')}/{name}"


def parent(path: str) -> str:
  path = path.rstrip("/")
  return path.rsplit("/", 1)[0] if "/" in path else "."


def resolve_checkpoint(path: str, tokenizer: str | None = None) -> Checkpoint:
  """Where the weights, model.json and tokenizer.model of `path` are (see the module note); `tokenizer`
  replaces the one beside the checkpoint."""
  path = path.rstrip("/")
  if path.endswith(".npz"):
    return Checkpoint("npz", path, parent(path), tokenizer or join(parent(path), TOKENIZER))
  fs, fs_path = fsspec.core.url_to_fs(path)
  if not fs.isdir(join(fs_path, "checkpoints")) and _is_transformers_dir(fs, fs_path):
    return Checkpoint("hf", path, path, tokenizer or join(path, TOKENIZER))
  if fs.isdir(join(fs_path, "checkpoints")) or fs.isfile(join(fs_path, "config.json")):
    return Checkpoint("workdir", path, path, tokenizer or join(path, TOKENIZER))
  if fs.isfile(join(fs_path, MODEL_JSON)):
    with fs.open(join(fs_path, MODEL_JSON), "rb") as f:
      meta = json.load(f)
    if not meta.get("checkpoint"):
      raise ValueError(f"{join(path, MODEL_JSON)} names no `checkpoint` (.npz) file; re-run the download step "
                       "or pass the .npz itself")
    return Checkpoint("npz", join(path, meta["checkpoint"]), path, tokenizer or join(path, TOKENIZER))
  raise FileNotFoundError(f"{path} is neither an .npz, a finetune workdir (checkpoints/ or config.json) nor a "
                          f"model directory ({MODEL_JSON} naming its .npz); check the path")


def _is_transformers_dir(fs, fs_path: str) -> bool:
  """config.json of a transformers PaliGemma (a finetune workdir's config.json has no `model_type`)."""
  if not fs.isfile(join(fs_path, "config.json")):
    return False
  try:
    with fs.open(join(fs_path, "config.json"), "rb") as f:
      config = json.load(f)
  except ValueError:  # not JSON (yet): not a transformers checkpoint
    return False
  return isinstance(config, dict) and config.get("model_type") == "paligemma"


def read_model_json(checkpoint: Checkpoint) -> dict:
  """The checkpoint's model.json (`llm`, `img`, `name`, ...). A bare `.npz` (no model.json beside it) gets
  one inferred from its array shapes (`components.paligemma.infer_config`), named as the model library
  names it; a workdir must have its own."""
  fs, fs_path = fsspec.core.url_to_fs(checkpoint.model_json)
  if fs.isfile(fs_path):
    with fs.open(fs_path, "rb") as f:
      return json.load(f)
  if checkpoint.kind == "hf":
    from components.paligemma import read_hf_config  # imported here: only transformers directories need it

    return {**read_hf_config(checkpoint.path), "name": _exported_name(checkpoint.directory)}
  if checkpoint.kind != "npz":
    raise FileNotFoundError(f"{checkpoint.model_json} not found: a finetune workdir writes its model.json at start")
  return infer_model_json(checkpoint.path)


def infer_model_json(npz: str) -> dict:
  """model.json for an `.npz` from its array shapes (headers only): the model_cfg, `name`, `checkpoint`."""
  from components.paligemma import checkpoint as checkpoint_lib  # the model library; imports jax

  inferred = checkpoint_lib.infer_config(npz)
  log.info("no %s beside %s: its array shapes say it is %s", MODEL_JSON, npz, inferred.name)
  return {**inferred.model_cfg, "name": inferred.name, "checkpoint": npz.rstrip("/").rsplit("/", 1)[-1]}


def find_vqvae(checkpoint: Checkpoint, meta: dict) -> str | None:
  """The mask codec (.npz) that goes with a checkpoint, or None: its model.json's `vqvae` (a file name in its
  directory, as download writes it, or a URL / absolute path); for a finetune workdir without one, the codec
  of the base checkpoint it was tuned from (model.json `base_checkpoint`, an .npz whose directory's model.json
  names it)."""
  if meta.get("vqvae"):
    return _beside(checkpoint.directory, meta["vqvae"])
  base = meta.get("base_checkpoint")
  if checkpoint.kind != "workdir" or not base:
    return None
  base_json = join(parent(base), MODEL_JSON)
  fs, fs_path = fsspec.core.url_to_fs(base_json)
  if not fs.isfile(fs_path):
    return None
  with fs.open(fs_path, "rb") as f:
    name = json.load(f).get("vqvae")
  return _beside(parent(base), name) if name else None


def _beside(directory: str, name: str) -> str:
  return name if "://" in name or name.startswith("/") else join(directory, name)


def _exported_name(directory: str) -> str:
  """The model name an export recorded (manifest.json: source model), else "paligemma"."""
  fs, fs_path = fsspec.core.url_to_fs(join(directory, "manifest.json"))
  if not fs.isfile(fs_path):
    return "paligemma"
  with fs.open(fs_path, "rb") as f:
    return json.load(f).get("name") or "paligemma"
