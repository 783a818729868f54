"""`load_trained_params(path, which)`: the weights a run produced, as plain numpy f32, LoRA merged.

Evaluation and export call this; it needs no mesh and runs on one CPU device. The frozen weights come
from where the run got them (the base .npz named in config.json, or the same seeded random init), the
trained ones from the orbax checkpoint.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os

import jax
import ml_collections
import numpy as np

from components import paligemma
from components.common import policy, sharding, train_checkpoints as checkpoints
from components.finetune import params, state as state_lib
from components.finetune import config as config_lib
from components.finetune import workdir as wd


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


def load_trained_params(path: str, which: str = "latest") -> tuple[dict, dict]:
  """(params: nested dict of float32 numpy arrays, model_cfg) from a finetune workdir or an .npz.

  `which`: "latest", "best" (lowest validation loss) or a step number; ignored for an .npz.
  """
  path = str(path)
  if path.endswith(".npz"):
    model_json = wd.read_json(os.path.join(os.path.dirname(path), wd.MODEL))
    if model_json is None:
      raise FileNotFoundError(f"{path}: no model.json beside it; an .npz needs its model directory")
    model_cfg = _model_cfg(model_json)
    return _to_f32(paligemma.load(path, model_cfg)), model_cfg

  config_json = wd.read_bytes(os.path.join(path, wd.CONFIG))
  model_json = wd.read_json(os.path.join(path, wd.MODEL))
  if config_json is None or model_json is None:
    raise FileNotFoundError(f"{path} is not a finetune workdir (no {wd.CONFIG}/{wd.MODEL}); pass a workdir "
                            "written by components.finetune or an .npz")
  config = ml_collections.ConfigDict(json.loads(config_json))
  mesh = sharding.make_mesh(1, 1, devices=jax.devices()[:1])
  with _orbax_quiet():
    mgr = checkpoints.manager(path, read_only=True)
    step = checkpoints.pick_step(mgr, which)
    if step is None:
      raise FileNotFoundError(f"{checkpoints.checkpoint_dir(path)} holds no checkpoint yet")
    setup = state_lib.build(config, mesh, total_steps=1)
    state, _ = checkpoints.restore(mgr, step, setup.abstract_state)
    mgr.close()
  if setup.source.checkpoint:  # frozen weights: the base checkpoint, as trained (cast to frozen_dtype)
    base = paligemma.load(setup.source.checkpoint, setup.source.model_cfg)
    _, frozen = policy.split_trainable(base, config_lib.trainable_regexes(config.trainable))
    frozen = jax.tree.map(lambda x, a: np.asarray(x).astype(a.dtype), frozen, setup.abstract_frozen)
  else:  # the same seeded random init the run started from
    _, frozen, _ = params.init_params(setup.model, setup.source, config, mesh)
  merged = policy.merge(_to_f32(state["train"]["params"]), _to_f32(frozen))
  merged = policy.apply_lora(merged, _to_f32(state["train"]["lora"]), params.lora_scale(config))
  return _to_f32(merged), _model_cfg(model_json)
