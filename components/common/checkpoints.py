"""What a `--checkpoint` names, decided the same way by every step that reads one (evaluate, export).

    resolve_checkpoint("gs://b/runs/7")               -> Checkpoint(kind="workdir", path="gs://b/runs/7", ...)
    resolve_checkpoint("models/pg2")                  -> Checkpoint(kind="npz", path="models/pg2/pg2-3b.npz", ...)
    resolve_checkpoint("models/pg2/pg2-3b.npz")       -> the same

Accepted, local or any fsspec URL (gs:// through gcsfs), checked in this order:
- an `.npz` file: `model.json` and `tokenizer.model` are looked up in its directory;
- a finetune workdir: a directory with `checkpoints/` or `config.json` (docs/ARCHITECTURE.md "A workdir");
- a model directory: a directory with `model.json`, whose `checkpoint` key names the `.npz` inside it
  (docs/ARCHITECTURE.md "A model directory").
Only where the files are is decided here; loading stays with each step.
"""
from __future__ import annotations

import dataclasses
import json

import fsspec

MODEL_JSON = "model.json"
TOKENIZER = "tokenizer.model"


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  kind: str  # "workdir" or "npz"
  path: str  # the workdir, or the .npz file
  directory: str  # holds model.json and tokenizer.model

  @property
  def model_json(self) -> str:
    return join(self.directory, MODEL_JSON)

  @property
  def tokenizer(self) -> str:
    return join(self.directory, TOKENIZER)


def join(directory: str, name: str) -> str:
  return f"{directory.rstrip('/')}/{name}"


def parent(path: str) -> str:
  path = path.rstrip("/")
  return path.rsplit("/", 1)[0] if "/" in path else "."


def resolve_checkpoint(path: str) -> Checkpoint:
  """Where the weights, model.json and tokenizer.model of `path` are (see the module note)."""
  path = path.rstrip("/")
  if path.endswith(".npz"):
    return Checkpoint("npz", path, parent(path))
  fs, fs_path = fsspec.core.url_to_fs(path)
  if fs.isdir(join(fs_path, "checkpoints")) or fs.isfile(join(fs_path, "config.json")):
    return Checkpoint("workdir", path, path)
  if fs.isfile(join(fs_path, MODEL_JSON)):
    with fs.open(join(fs_path, MODEL_JSON), "rb") as f:
      meta = json.load(f)
    if not meta.get("checkpoint"):
      raise ValueError(f"{join(path, MODEL_JSON)} names no `checkpoint` (.npz) file; re-run the download step "
                       "or pass the .npz itself")
    return Checkpoint("npz", join(path, meta["checkpoint"]), path)
  raise FileNotFoundError(f"{path} is neither an .npz, a finetune workdir (checkpoints/ or config.json) nor a "
                          f"model directory ({MODEL_JSON} naming its .npz); check the path")
