"""Orbax checkpoints of a run: the train state and the data iterator's position, in one step folder.

  WORKDIR/checkpoints/<step>/state   trainable params, LoRA adapters, optimizer state, step, rng
  WORKDIR/checkpoints/<step>/data    the grain iterator state (JSON, the same on every host)

Frozen weights are not saved: they are the init checkpoint (or the seeded random init) named in
`WORKDIR/config.json`. Kept: the last `keep` checkpoints plus the one with the best validation loss.
Saves are asynchronous (device arrays are copied to host before `save` returns, so the next train step
may reuse their buffers); a step folder is only visible once complete, so a kill mid-save loses nothing.
"""
from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

VAL_LOSS = "val_loss"


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(workdir, "checkpoints")


def manager(workdir: str, *, keep: int = 2, async_save: bool = True, read_only: bool = False
            ) -> ocp.CheckpointManager:
  keep_policy = policies.AnyPreservationPolicy([
      policies.LatestN(n=keep),
      policies.BestN(get_metric_fn=lambda m: m[VAL_LOSS], reverse=True, n=1,
                     keep_checkpoints_without_metrics=False),
  ])
  options = ocp.CheckpointManagerOptions(
      preservation_policy=keep_policy, enable_async_checkpointing=async_save, read_only=read_only,
      create=not read_only)
  handlers = {"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()}
  return ocp.CheckpointManager(checkpoint_dir(workdir), item_handlers=handlers, options=options)


def save(mgr: ocp.CheckpointManager, step: int, state, data_state: dict, val_loss: float | None = None,
         force: bool = False) -> bool:
  metrics = None if val_loss is None else {VAL_LOSS: float(val_loss)}
  return mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                data=ocp.args.JsonSave(data_state)),
                  metrics=metrics, force=force)


def restore(mgr: ocp.CheckpointManager, step: int, abstract_state) -> tuple[dict, dict]:
  """(state placed per the shardings in `abstract_state`, data iterator state)."""
  out = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                  data=ocp.args.JsonRestore()))
  return out["state"], out["data"]


def saved_state(mgr: ocp.CheckpointManager, step: int, device) -> dict:
  """The restore target of a step's state as it was saved (shapes, dtypes), every leaf on `device`: for
  readers that have neither the run's optimizer nor its mesh."""
  metadata = mgr.item_metadata(step)["state"]
  tree = getattr(metadata, "tree", metadata)  # recent orbax wraps the tree in a TreeMetadata
  place = jax.sharding.SingleDeviceSharding(device)
  return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=place), tree)


def pick_step(mgr: ocp.CheckpointManager, which: str) -> int | None:
  """`latest`, `best` (lowest validation loss; latest when no checkpoint has one) or a step number."""
  steps = mgr.all_steps()
  if not steps:
    return None
  if which == "latest":
    return max(steps)
  if which == "best":
    scored = [(m[VAL_LOSS], s) for s in steps if (m := mgr.metrics(s)) and VAL_LOSS in m]
    return min(scored)[1] if scored else max(steps)
  if str(which).isdigit() and int(which) in steps:
    return int(which)
  raise ValueError(f"checkpoint {which!r} not found in {mgr.directory}; have steps {sorted(steps)}, "
                   "or use 'latest' / 'best'")


def abstract_like(tree):
  """ShapeDtypeStructs (with shardings) of a tree of arrays: the restore target."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
                      tree)
