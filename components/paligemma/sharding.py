"""Activation sharding hints for the scanned layers.

Inside a `scan`, XLA does not propagate the batch sharding of the inputs on its own: a 3.1B model went
from fitting to out of memory because every layer's activations were replicated
(../shared/reference/TPU_AOT.md). So each layer pins its activations to the batch axes of the active
mesh. With no mesh (or a mesh without a `data` axis) this is a no-op, so the model also runs plainly.
"""
import jax
from jax._src import mesh as mesh_lib  # `with mesh:` (legacy) has no public getter.
from jax.sharding import AxisType, PartitionSpec

BATCH_AXES = ("data", "fsdp")  # the trainer's mesh: batch over data, and over fsdp too when present.


def _active_mesh():
  abstract = jax.sharding.get_abstract_mesh()  # `jax.set_mesh(...)`, also inside jit.
  if not abstract.empty:
    return abstract
  physical = mesh_lib.thread_resources.env.physical_mesh  # `with Mesh(...):`
  return None if physical.empty else physical


def constrain_batch(x: jax.Array) -> jax.Array:
  """Shards axis 0 of `x` over the mesh's batch axes (`data`, plus `fsdp` if present); else returns `x`."""
  mesh = _active_mesh()
  if mesh is None or "data" not in mesh.axis_names:
    return x
  # Explicit axes carry their sharding in the types already; a constraint on them is an error.
  axes = tuple(a for a in BATCH_AXES if a in mesh.axis_names
               and mesh.axis_types[mesh.axis_names.index(a)] != AxisType.Explicit)
  size = 1
  for a in axes:
    size *= mesh.shape[a]
  if not axes or x.shape[0] % size:  # a batch that does not split evenly is left to XLA.
    return x
  return jax.lax.with_sharding_constraint(x, PartitionSpec(axes))


def map_over_batch(fn, *args):
  """`fn(*args)` run per shard of the batch (axis 0 of every arg) under the active mesh (`shard_map` over
  its batch axes), for kernels XLA cannot partition itself (Pallas); without a mesh, `fn(*args)`."""
  mesh = _active_mesh()
  if mesh is None or "data" not in mesh.axis_names:
    return fn(*args)
  axes = tuple(a for a in BATCH_AXES if a in mesh.axis_names)
  size = 1
  for a in axes:
    size *= mesh.shape[a]
  if size == 1 or args[0].shape[0] % size:
    return fn(*args)
  spec = PartitionSpec(axes)
  return jax.shard_map(fn, mesh=mesh, in_specs=(spec,) * len(args), out_specs=spec, check_vma=False)(*args)
