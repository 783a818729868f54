"""The steps' device mesh, big_vision's FSDP rule, and the model's logical activation axes on that mesh.

The mesh has two axes, `data` and `fsdp`. Every batch is split over both (each device sees different
examples); parameters and optimizer state are split over `fsdp` only, one leaf at a time: a leaf over
`min_bytes` is cut along its largest dimension that divides the `fsdp` size, anything else is replicated
(big_vision's `fsdp(axis, min_size_to_shard_mb=4)` rule). The model names its activations' axes
logically (`components.paligemma.sharding`); `ACTIVATION_RULES` puts them on this mesh and `use_mesh`
activates both, for the trainer, evaluation and the fit planner alike.
"""
from __future__ import annotations

import contextlib

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from components.paligemma import sharding as model_sharding

BATCH_AXES = ("data", "fsdp")
# Logical axis of the model -> mesh axes (Flax logical axis rules): activations' batch over every device.
ACTIVATION_RULES = ((model_sharding.BATCH, BATCH_AXES),)


def make_mesh(data: int = 1, fsdp: int = -1, devices=None) -> Mesh:
  """A `('data', 'fsdp')` mesh over `devices` (default: all); one size may be -1 (= the rest)."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = [data, fsdp]
  if sizes.count(-1) > 1:
    raise ValueError(f"mesh sizes {dict(zip(BATCH_AXES, sizes))}: at most one may be -1")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"{len(devices)} devices cannot be split into mesh {dict(zip(BATCH_AXES, sizes))}")
    sizes[sizes.index(-1)] = len(devices) // known
  if int(np.prod(sizes)) != len(devices):
    raise ValueError(f"mesh {dict(zip(BATCH_AXES, sizes))} needs {int(np.prod(sizes))} devices, "
                     f"there are {len(devices)}")
  try:  # topology-aware placement on TPU/GPU; plain order elsewhere
    grid = mesh_utils.create_device_mesh(sizes, devices)
  except (ValueError, NotImplementedError, AssertionError):
    grid = np.asarray(devices).reshape(sizes)
  return Mesh(grid, BATCH_AXES)


def fsdp_spec(shape, itemsize: int, axis_size: int, min_bytes: int = 4 * 2**20) -> P:
  """big_vision's rule for one leaf: its largest dimension divisible by `axis_size`, if big enough."""
  if axis_size == 1 or int(np.prod(shape, dtype=np.int64)) * itemsize <= min_bytes:
    return P()
  spec = [None] * len(shape)
  for i in np.argsort(shape)[::-1]:  # same tie order as big_vision
    if shape[i] % axis_size == 0:
      spec[i] = "fsdp"
      return P(*spec)
  return P()


def tree_shardings(tree, mesh: Mesh, min_bytes: int = 4 * 2**20):
  """NamedSharding for every leaf of a (possibly abstract) tree by the FSDP rule."""
  axis_size = mesh.shape["fsdp"]

  def one(leaf):
    shape = np.shape(leaf)
    itemsize = getattr(getattr(leaf, "dtype", None), "itemsize", 4)
    return NamedSharding(mesh, fsdp_spec(shape, itemsize, axis_size, min_bytes))
  return jax.tree.map(one, tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension over every device."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


@contextlib.contextmanager
def use_mesh(mesh: Mesh):
  """`jax.set_mesh(mesh)` with ACTIVATION_RULES: what a step traces and runs the model under."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(ACTIVATION_RULES):
    yield mesh
