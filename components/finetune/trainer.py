"""The fine-tuning run, top to bottom: setup, data, model, sharding, restore, loop, save.

`train(config, workdir)` is the one core the CLI (`python -m components.finetune`) and the KFP component
call. Rerunning it with the same workdir resumes from the last checkpoint (no flag needed); SIGTERM
(preemption) saves a checkpoint and returns; a NaN/inf loss stops with `TrainingDiverged`, keeping the
checkpoints written so far.
"""
from __future__ import annotations

import collections
import logging
import math
import os
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

from components import paligemma
from components.common import sharding, train_checkpoints as checkpoints
from components.finetune import autotune, data, flops, overfit, params, preemption as preemption_lib
from components.finetune import state as state_lib
from components.finetune import workdir as wd
from components.finetune import config as config_lib

log = logging.getLogger("components.finetune")


class TrainingDiverged(FloatingPointError):
  """The loss became NaN or infinite."""


class _CompileFirst:
  """A jitted step compiled ahead of its first call, after which all hosts meet at a barrier: a host that
  compiles slower must not make another's first collective time out (gloo's connect timeout)."""

  def __init__(self, jitted, name: str):
    self._jitted, self._name, self._compiled = jitted, name, None

  def __call__(self, *args):
    if self._compiled is None:
      self._compiled = self._jitted.lower(*args).compile()
      if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"finetune: {self._name} compiled")
    return self._compiled(*args)


def _duration(seconds: float) -> str:
  minutes, secs = divmod(int(seconds), 60)
  return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


def _global_batch(local: dict, batch_sharding) -> dict:
  return {k: jax.make_array_from_process_local_data(batch_sharding, v) for k, v in local.items()}


def _total_steps(config, n_train: int) -> int:
  if config.total_steps is not None:
    return int(config.total_steps)
  return max(1, int(config.epochs * n_train // config.batch_size))


def _write_run_files(workdir: str, config, source, tokenizer_bytes: bytes) -> None:
  wd.write_bytes(os.path.join(workdir, wd.CONFIG), (config_lib.to_json(config) + "\n").encode())
  model_json = {**source.model_cfg, "name": source.name, "base_checkpoint": source.checkpoint,
                **({"vqvae": source.vqvae} if source.vqvae else {})}  # the codec travels with the model
  model_json["llm"] = {**model_json["llm"], "dropout": 0.0}  # for evaluation and export
  wd.write_json(os.path.join(workdir, wd.MODEL), model_json)
  wd.write_bytes(os.path.join(workdir, wd.TOKENIZER), tokenizer_bytes)


def evaluate(eval_step, train_tree, frozen, config, data_dir, preprocess, batch_sharding) -> float | None:
  """Mean validation loss over the valid split (per-example means, padding rows excluded)."""
  total, count = 0.0, 0.0
  for local in data.eval_batches(data_dir, config.valid_split, preprocess, batch_size=config.batch_size,
                                 max_batches=config.eval_batches, threads=config.data_threads,
                                 process_index=jax.process_index(), process_count=jax.process_count()):
    s, n = eval_step(train_tree, frozen, _global_batch(local, batch_sharding))
    total, count = total + float(s), count + float(n)
  return total / count if count else None


def train(config, workdir: str) -> dict:
  """Runs (or resumes) a fine-tuning run. Returns {"step", "loss", "val_loss", "status", "model_name", "text_len",
  "warnings"} (`warnings`: e.g. overfitting, also logged)."""
  # --- Setup: devices and mesh ---
  is_chief = jax.process_index() == 0
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
  log.info("%d processes, %d devices (%s), mesh %s", jax.process_count(), jax.device_count(),
           jax.devices()[0].device_kind, dict(mesh.shape))

  # --- Model source and tokenizer ---
  setup_source = params.resolve_model(config)
  if not setup_source.tokenizer:
    raise ValueError("no tokenizer: set config.tokenizer, or config.checkpoint to a model directory / an .npz "
                     "with tokenizer.model beside it")
  tokenizer = paligemma.Tokenizer(setup_source.tokenizer)
  llm_cfg = paligemma.configs.resolve_llm(setup_source.model_cfg["llm"])
  if tokenizer.vocab_size > llm_cfg["vocab_size"]:
    raise ValueError(f"tokenizer {setup_source.tokenizer} has {tokenizer.vocab_size} pieces but the model's "
                     f"vocabulary is {llm_cfg['vocab_size']}; use the model's own tokenizer")

  # --- Data: one version of the dataset directory for the whole run, even if a convert replaces it ---
  dataset = data.pin_dataset(config.data_dir)
  data_dir = dataset.root
  config.text_len = data.fit_text_len(config.text_len, data.token_lengths(data_dir, config.train_split, tokenizer))
  if is_chief:  # config.json holds the text_len trained with
    _write_run_files(workdir, config, setup_source, wd.read_bytes(setup_source.tokenizer))
  n_train = data.num_examples(data_dir, config.train_split)
  total_steps = _total_steps(config, n_train)
  image_size = paligemma.configs.image_size(setup_source.model_cfg)
  preprocess = data.Preprocess(tokenizer, image_size, config.text_len)
  train_iter = data.train_iterator(
      data_dir, config.train_split, preprocess, batch_size=config.batch_size, seed=config.seed,
      threads=config.data_threads, process_index=jax.process_index(), process_count=jax.process_count())
  has_valid = bool(config.valid_split)
  if has_valid:
    try:
      data.num_examples(data_dir, config.valid_split)
    except FileNotFoundError:
      log.warning("no %r split in %s: validation is off", config.valid_split, config.data_dir)
      has_valid = False
  batch_sharding = sharding.batch_sharding(mesh)

  # --- Model, optimizer and sharded state ---
  setup = state_lib.build(config, mesh, total_steps, setup_source)
  ckpts = checkpoints.Checkpoints(workdir, keep=config.keep_checkpoints, async_save=config.async_checkpoints)
  state, frozen = state_lib.init_state(setup, config)

  # --- Restore: the same workdir continues where it stopped (from its newest verified checkpoint) ---
  start = 0
  if (restored := ckpts.restore_latest(setup.abstract_state)) is not None:
    start, state, data_state = restored
    train_iter.set_state(data_state)
    log.info("resumed from step %d in %s", start, ckpts.directory)
  if start >= total_steps:
    log.info("already trained: step %d of %d", start, total_steps)

  # --- Memory: the train step compiled before the first step; "auto" picks the fastest that fits ---
  limit = autotune.memory_limit(list(mesh.devices.flat), config.memory_limit_gib)
  log.info("compiling the train step (%s, batch %d, text_len %d, remat %s) ...", setup_source.name,
           config.batch_size, config.text_len, config.remat_policy)
  decision = state_lib.tune_train_step(setup, config, limit)
  setup = state_lib.with_remat(setup, config, decision.remat_policy)  # the eval step's model: the same
  if is_chief:
    wd.write_json(os.path.join(workdir, wd.REMAT), decision.to_json())
  if jax.process_count() > 1:  # a host that compiled slower must not time out another's first collective
    multihost_utils.sync_global_devices("finetune: train step compiled")
  train_step = decision.compiled

  # --- Steps and bookkeeping ---
  eval_step = _CompileFirst(state_lib.eval_step_fn(setup, config), "eval step")
  seq_len = paligemma.configs.num_image_tokens(setup_source.model_cfg) + config.text_len
  flops_per_step = config.batch_size * flops.train_flops_per_example(setup.abstract_full, setup_source.model_cfg,
                                                                     config.text_len)
  metrics = wd.MetricsLog(workdir, resume_step=start, enabled=is_chief)
  preemption = preemption_lib.Preemption()
  last_saved, loss, val_loss, status = start, float("nan"), None, "done"
  recent_losses = collections.deque(maxlen=max(1, config.log_every))  # the training loss beside a validation
  validations = []  # overfit.Point per validation
  window_start, window_steps, t0 = time.perf_counter(), 0, time.perf_counter()

  def save(step, val=None, force=False):
    nonlocal last_saved
    if step != last_saved:
      ckpts.save(step, state, train_iter.get_state(), val_loss=val, force=force)
      last_saved = step

  # --- Loop ---
  try:
    with sharding.use_mesh(mesh):
      for step in range(start + 1, total_steps + 1):
        batch = _global_batch(next(train_iter), batch_sharding)
        state, step_metrics = train_step(state, frozen, batch)
        loss = float(step_metrics["loss"])
        recent_losses.append(loss)
        if not math.isfinite(loss):
          good = ckpts.latest_verified()  # named only once its checksums verify
          raise TrainingDiverged(
              f"loss is {loss} at step {step}; training stopped. The last good checkpoint is "
              f"{f'step {good} in {ckpts.directory}' if good is not None else 'none (no verified checkpoint)'}. "
              "Lower config.optimizer.lr, enable gradient clipping (config.optimizer.grad_clip_norm=1.0), "
              "or check the data for broken examples.")
        window_steps += 1
        ckpts.poll()  # seals finished asynchronous saves with their checksum manifest

        if step % config.log_every == 0 or step == total_steps:
          seconds = (time.perf_counter() - window_start) / window_steps
          lr = float(setup.lr_fn(step - 1))
          utilisation = flops.mfu(flops_per_step, seconds, jax.devices())
          eta = seconds * (total_steps - step)
          log.info("step %d/%d | loss %.4f | lr %.3g | %.1f examples/s | %.0f tokens/s | MFU %s | ETA %s",
                   step, total_steps, loss, lr, config.batch_size / seconds,
                   config.batch_size * seq_len / seconds,
                   "n/a" if utilisation is None else f"{100 * utilisation:.1f}%",
                   _duration(eta))
          metrics.write(step, loss=loss, lr=lr, grad_norm=float(step_metrics["grad_norm"]),
                        examples_per_s=config.batch_size / seconds,
                        tokens_per_s=config.batch_size * seq_len / seconds, mfu=utilisation)
          metrics.flush()
          window_start, window_steps = time.perf_counter(), 0

        is_eval = has_valid and ((config.eval_every and step % config.eval_every == 0) or step == total_steps)
        if is_eval:
          eval_start = time.perf_counter()
          val_loss = evaluate(eval_step, state["train"], frozen, config, data_dir, preprocess, batch_sharding)
          log.info("step %d/%d | validation loss %.4f", step, total_steps, val_loss)
          if val_loss is not None:
            validations.append(overfit.Point(step, float(np.mean(recent_losses)), val_loss))
          metrics.write(step, val_loss=val_loss)
          metrics.flush()
          save(step, val=val_loss, force=True)
          window_start += time.perf_counter() - eval_start  # throughput counts train steps only
        elif step % config.checkpoint_every == 0 or step == total_steps:
          save(step)

        if preemption.should_stop(step):
          log.warning("SIGTERM at step %d: saving a checkpoint and stopping; rerun the same command to resume",
                      step)
          save(step, force=True)
          status = "preempted"
          break
  finally:
    try:
      ckpts.close()  # waits for the last save and its manifest
      metrics.close()
      dataset.close()
    finally:
      preemption.restore()
  log.info("finished at step %d in %.0f s (%s)", int(state["step"]), time.perf_counter() - t0, status)
  warnings = [w for w in [overfit.warning(validations)] if w]
  for w in warnings:
    log.warning("%s", w)
  return {"step": int(state["step"]), "loss": loss, "val_loss": val_loss, "status": status,
          "model_name": setup_source.name, "text_len": config.text_len, "warnings": warnings}
