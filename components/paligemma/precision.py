"""Mixed precision: the model's matmuls, accumulated in float32 forward and backward.

`einsum(eqn, a, b)` is `jnp.einsum` in the inputs' dtype, written as a dot with a float32 result rounded
to that dtype. On TPU and GPU that is what a bf16 dot does anyway (f32 accumulators); XLA:CPU, asked for a
bf16 result, upcasts both operands and runs an f32 dot, while bf16 operands with an f32 result run on
the CPU's bf16 units (AMX / AVX-512 BF16 when it has them): one [768, 256] x [256, 1024] dot alone on
the development machine, 2.08 ms against 0.48 ms (benchmarks/RESULTS.md).
Autodiff would multiply the cotangent, upcast to f32, by the bf16 operand (two f32 matmuls), so the
backward is written out here: the cotangent rounded to the inputs' dtype, each gradient one more
f32-accumulated einsum. `einsum_f32` is the same with the float32 result kept (attention logits, the
tied output embedding). With f32 inputs both are exactly `jnp.einsum`.

Both are one `jax.custom_vjp` (`_matmul`), whose dots remat policies do not see: their outputs are named
(`MATMUL`, or `BATCHED_MATMUL` when the einsum has batch dims) with `checkpoint_name`, and
`remat_policy(name)` is the `jax.checkpoint_policies` policy of that name, saving those outputs too where it
saves dots.
"""
import functools
import string

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

MATMUL, BATCHED_MATMUL = "matmul", "batched_matmul"
# The jax.checkpoint_policies that save dots, and which of the names above each also saves.
_SAVED_NAMES = {"dots_saveable": (MATMUL, BATCHED_MATMUL), "checkpoint_dots": (MATMUL, BATCHED_MATMUL),
                "dots_with_no_batch_dims_saveable": (MATMUL,), "checkpoint_dots_with_no_batch_dims": (MATMUL,)}


def einsum(eqn: str, a, b):
  """`jnp.einsum(eqn, a, b)` for a and b of one dtype, accumulated in float32, result in that dtype."""
  return checkpoint_name(_matmul(eqn, a.dtype, a, b), _name(eqn, a.ndim, b.ndim))


def einsum_f32(eqn: str, a, b):
  """`jnp.einsum(eqn, a, b)` for a and b of one dtype, accumulated and returned in float32."""
  return checkpoint_name(_matmul(eqn, jnp.dtype(jnp.float32), a, b), _name(eqn, a.ndim, b.ndim))


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
  """`lax.dot_general` computed as `einsum`, for flax layers' `dot_general` hook (without its options)."""
  if precision is not None or preferred_element_type is not None:
    raise ValueError("precision.dot_general sets the precision itself: leave the layer's `precision` and "
                     "`preferred_element_type` unset.")
  (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
  letters = iter(string.ascii_letters)
  lhs_index = [next(letters) for _ in range(lhs.ndim)]
  rhs_index = [None] * rhs.ndim
  for i, j in zip(lhs_contract + lhs_batch, rhs_contract + rhs_batch):
    rhs_index[j] = lhs_index[i]
  rhs_index = [c or next(letters) for c in rhs_index]
  shared = set(lhs_contract) | set(lhs_batch)
  out = ([lhs_index[i] for i in lhs_batch] + [c for i, c in enumerate(lhs_index) if i not in shared]
         + [c for j, c in enumerate(rhs_index) if j not in set(rhs_contract) | set(rhs_batch)])
  return einsum(f"{''.join(lhs_index)},{''.join(rhs_index)}->{''.join(out)}", lhs, rhs)


def remat_policy(name: str):
  """`jax.checkpoint_policies.<name>`; where it saves dots, it saves this module's einsums too."""
  policy = getattr(jax.checkpoint_policies, name)
  if name not in _SAVED_NAMES:
    return policy
  return jax.checkpoint_policies.save_from_both_policies(
      policy, jax.checkpoint_policies.save_only_these_names(*_SAVED_NAMES[name]))


def _name(eqn: str, a_ndim: int, b_ndim: int) -> str:
  lhs, rhs, out = _parse(eqn, a_ndim, b_ndim)
  return BATCHED_MATMUL if set(lhs) & set(rhs) & set(out) else MATMUL


def _dot(eqn, a, b, dtype):
  return jnp.einsum(eqn, a, b, preferred_element_type=jnp.float32).astype(dtype)


def _grads(eqn: str, a, b, g):
  """(da, db) of `einsum(eqn, a, b)` for a cotangent g in the inputs' dtype: two f32-accumulated einsums."""
  lhs, rhs, out = _parse(eqn, a.ndim, b.ndim)
  return _dot(f"{out},{rhs}->{lhs}", g, b, a.dtype), _dot(f"{lhs},{out}->{rhs}", a, g, b.dtype)


@functools.lru_cache(maxsize=None)
def _parse(eqn: str, a_ndim: int, b_ndim: int) -> tuple[str, str, str]:
  """(lhs, rhs, out) index strings, an ellipsis spelled out; every index of an operand must appear in the
  other operand or the output (else its gradient is a broadcast, which no matmul here needs)."""
  inputs, out = eqn.replace(" ", "").split("->")
  lhs, rhs = inputs.split(",")
  if "..." in eqn:  # spelled with unused letters, right-aligned as broadcasting aligns them
    counts = [ndim - len(s.replace("...", "")) if "..." in s else 0 for s, ndim in ((lhs, a_ndim), (rhs, b_ndim))]
    letters = "".join(c for c in string.ascii_lowercase if c not in eqn)[:max(counts)]
    lhs, rhs = (s.replace("...", letters[len(letters) - n:]) for s, n in zip((lhs, rhs), counts))
    out = out.replace("...", letters)
  for name, own, others in (("first", lhs, rhs + out), ("second", rhs, lhs + out)):
    if len(set(own)) != len(own) or not set(own) <= set(others):
      raise ValueError(f"precision.einsum({eqn!r}): an index of the {name} operand repeats or appears nowhere "
                       "else; write that sum or trace before the matmul.")
  return lhs, rhs, out


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _matmul(eqn, out_dtype, a, b):
  return _dot(eqn, a, b, out_dtype)


def _matmul_forward(eqn, out_dtype, a, b):
  return _matmul(eqn, out_dtype, a, b), (a, b)


def _matmul_backward(eqn, out_dtype, residuals, g):
  del out_dtype
  a, b = residuals
  return _grads(eqn, a, b, g.astype(a.dtype))  # an f32 cotangent (einsum_f32) rounded to the inputs' dtype


_matmul.defvjp(_matmul_forward, _matmul_backward)
