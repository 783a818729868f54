"""Activation sharding hints for the scanned layers, by logical axis name.

Inside a `scan`, XLA does not propagate the batch sharding of the inputs on its own: a 3.1B model went
from fitting to out of memory because every layer's activations were replicated
(../shared/reference/TPU_AOT.md). So each layer pins its activations' batch axis, named `BATCH` here; the
caller maps that name onto its own mesh axes with Flax's logical axis rules (as big_vision's
`sharding_rules` and MaxText's `logical_axis_rules`), for example

    with jax.set_mesh(mesh), nn.logical_axis_rules([(paligemma.sharding.BATCH, ("data", "fsdp"))]):
      ...  # jit / apply the model

(`components.common.sharding.use_mesh` does exactly that for the steps' meshes). Without rules or without
a mesh (`jax.set_mesh`) this is a no-op, so the model also runs plainly.
"""
import math

import flax.linen as nn
import jax

BATCH = "activation_batch"  # axis 0 of every activation [B, ...]


def constrain_batch(x: jax.Array) -> jax.Array:
  """Shards axis 0 of `x` as the logical axis rules map `BATCH`; else (no rules, no mesh, a batch that does not
  split evenly over those mesh axes) returns `x` and leaves the layout to XLA."""
  rules, mesh = nn.get_logical_axis_rules(), jax.sharding.get_abstract_mesh()
  if not rules or mesh.empty:
    return x
  spec = nn.logical_to_mesh_axes((BATCH,) + (None,) * (x.ndim - 1), rules)
  axes = spec[0] if isinstance(spec[0], tuple) else (spec[0],) if spec[0] else ()
  if not axes or x.shape[0] % math.prod(mesh.shape[a] for a in axes):
    return x
  return jax.lax.with_sharding_constraint(x, spec)


def _batch_axes(mesh, rules) -> tuple[str, ...]:
  spec = nn.logical_to_mesh_axes((BATCH,), rules)
  return spec[0] if isinstance(spec[0], tuple) else (spec[0],) if spec[0] else ()


def map_over_batch(fn, *args):
  """`fn(*args)` run per shard of the batch (axis 0 of every arg) over the mesh axes `BATCH` maps to
  (`shard_map`), for kernels XLA cannot partition itself (Pallas); without rules or a mesh, `fn(*args)`."""
  rules, mesh = nn.get_logical_axis_rules(), jax.sharding.get_abstract_mesh()
  if not rules or mesh.empty:
    return fn(*args)
  axes = _batch_axes(mesh, rules)
  if not axes or args[0].shape[0] % math.prod(mesh.shape[a] for a in axes):
    return fn(*args)
  spec = jax.sharding.PartitionSpec(axes)
  return jax.shard_map(fn, mesh=mesh, in_specs=(spec,) * len(args), out_specs=spec, check_vma=False)(*args)
