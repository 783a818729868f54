"""Reading a finetune workdir (docs/ARCHITECTURE.md "A finetune workdir"): its file names, and
`load_trained_params(path, which)`, the weights a run produced as plain numpy f32 with LoRA merged.

Evaluation and export call this; it needs no mesh and runs on one CPU device. The frozen weights come
from where the run got them (the base .npz named in model.json, or the same seeded random init), the
trained ones from the orbax checkpoint, restored as saved (shapes and dtypes from its own metadata).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os

import fsspec
import jax
import jax.numpy as jnp
import numpy as np

from components import paligemma
from components.common import policy, train_checkpoints as checkpoints
from components.common.checkpoints import infer_model_json

CONFIG, MODEL, TOKENIZER, METRICS = "config.json", "model.json", "tokenizer.model", "metrics.jsonl"


def read_bytes(path: str) -> bytes | None:
  fs, _ = fsspec.core.url_to_fs(path)
  if not fs.exists(path):
    return None
  with fsspec.open(path, "rb") as f:
    return f.read()


def read_json(path: str):
  data = read_bytes(path)
  return None if data is None else json.loads(data)


def _to_f32(tree):
  return jax.tree.map(lambda x: np.asarray(x, np.float32), tree)


def _model_cfg(model_json: dict) -> dict:
  return {k: dict(v) for k, v in model_json.items() if k in ("llm", "img")}


@contextlib.contextmanager
def _orbax_quiet():
  """Orbax reports every restore step at INFO through absl ("Missing metrics for step N"): noise to a user."""
  absl_logger = logging.getLogger("absl")
  level = absl_logger.level
  absl_logger.setLevel(max(level, logging.WARNING))
  try:
    yield
  finally:
    absl_logger.setLevel(level)


def _frozen_weights(config: dict, model_json: dict, model_cfg: dict) -> dict:
  """The weights the run did not train, as it held them (cast to its frozen_dtype)."""
  if model_json.get("base_checkpoint"):  # the init .npz
    weights = paligemma.load(model_json["base_checkpoint"], model_cfg)
  else:  # the same seeded random init the run started from
    weights = jax.jit(lambda key: paligemma.init_params(model_cfg, key))(jax.random.key(config["seed"]))
  _, frozen = policy.split_trainable(weights, policy.trainable_regexes(config["trainable"]))
  return jax.tree.map(lambda x: np.asarray(x).astype(jnp.dtype(config["frozen_dtype"])), frozen)


def load_trained_params(path: str, which: str = "latest") -> tuple[dict, dict]:
  """(params: nested dict of float32 numpy arrays, model_cfg) from a finetune workdir or an .npz.

  `which`: "latest", "best" (lowest validation loss) or a step number; ignored for an .npz. Only a
  checkpoint whose files match its checksum manifest is used: a damaged "latest" or "best" gives way to the
  next one (one log line each); a damaged step number is an error (`CheckpointError`).
  """
  path = str(path)
  if path.endswith(".npz"):
    model_json = read_json(os.path.join(os.path.dirname(path), MODEL)) or infer_model_json(path)
    model_cfg = _model_cfg(model_json)
    return _to_f32(paligemma.load(path, model_cfg)), model_cfg

  config = read_json(os.path.join(path, CONFIG))
  model_json = read_json(os.path.join(path, MODEL))
  if config is None or model_json is None:
    raise FileNotFoundError(f"{path} is not a finetune workdir (no {CONFIG}/{MODEL}); pass a workdir "
                            "written by components.finetune or an .npz")
  model_cfg = _model_cfg(model_json)
  with _orbax_quiet():
    ckpts = checkpoints.Checkpoints(path, read_only=True)
    try:
      if not ckpts.steps():
        raise FileNotFoundError(f"{ckpts.directory} holds no checkpoint yet")
      _, state = ckpts.restore_for_reading(which)  # verified against its checksums, as saved
    finally:
      ckpts.close()
  merged = policy.merge(_to_f32(state["train"]["params"]), _to_f32(_frozen_weights(config, model_json, model_cfg)))
  lora = config["lora"]
  merged = policy.apply_lora(merged, _to_f32(state["train"]["lora"]), policy.lora_scale(lora["rank"], lora["alpha"]))
  return _to_f32(merged), model_cfg
