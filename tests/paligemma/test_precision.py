"""precision.py: the model's matmuls, accumulated in f32 forward and backward, are jnp.einsum in value and
gradient, lower to bf16 x bf16 -> f32 dots (no f32 upcast, no bf16-result dot), and stay visible to the
remat policies that save dots."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from components.paligemma import precision

EQUATIONS = [  # (equation, lhs shape, rhs shape): the model's kinds of matmul
    ("TD,DF->TF", (6, 4), (4, 5)),  # MLP rows
    ("BTE,NEH->BTNH", (2, 3, 4), (5, 4, 2)),  # q projection
    ("BTNH,NHE->BTE", (2, 3, 5, 2), (5, 2, 4)),  # attention output
    ("BTKGH,BSKH->BKGTS", (2, 3, 2, 2, 4), (2, 5, 2, 4)),  # attention logits (batch dims B, K)
    ("BKGTS,BSKH->BTKGH", (2, 2, 2, 3, 5), (2, 5, 2, 4)),  # probabilities times values
    ("...e,ve->...v", (2, 3, 4), (7, 4)),  # tied output embedding
]


def _random(shape, seed, dtype=jnp.float32):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def _value_and_grads(fn, eqn, a, b):
  loss = lambda a, b: jnp.sum(jnp.sin(fn(eqn, a, b).astype(jnp.float32)))
  return jax.value_and_grad(loss, argnums=(0, 1))(a, b)


@pytest.mark.parametrize("eqn,lhs,rhs", EQUATIONS, ids=[e for e, *_ in EQUATIONS])
@pytest.mark.parametrize("fn", [precision.einsum, precision.einsum_f32], ids=["einsum", "einsum_f32"])
def test_f32_is_jnp_einsum_in_value_and_gradient(fn, eqn, lhs, rhs):
  a, b = _random(lhs, 0), _random(rhs, 1)
  ours, reference = _value_and_grads(fn, eqn, a, b), _value_and_grads(jnp.einsum, eqn, a, b)
  np.testing.assert_allclose(ours[0], reference[0], rtol=1e-6)
  for got, want in zip(ours[1], reference[1]):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("eqn,lhs,rhs", EQUATIONS, ids=[e for e, *_ in EQUATIONS])
@pytest.mark.parametrize("fn,out_dtype", [(precision.einsum, jnp.bfloat16), (precision.einsum_f32, jnp.float32)],
                         ids=["einsum", "einsum_f32"])
def test_bf16_forward_and_backward_are_bf16_dots_with_f32_results(fn, out_dtype, eqn, lhs, rhs, hlo_dot_types):
  a, b = _random(lhs, 0, jnp.bfloat16), _random(rhs, 1, jnp.bfloat16)
  assert fn(eqn, a, b).dtype == out_dtype
  hlo = jax.jit(lambda a, b: _value_and_grads(fn, eqn, a, b)).lower(a, b).as_text()
  assert hlo_dot_types(hlo) == [("bf16", "bf16", "f32")] * 3, hlo_dot_types(hlo)
  value, grads = _value_and_grads(fn, eqn, a, b)
  assert [g.dtype for g in grads] == [jnp.bfloat16, jnp.bfloat16]
  # The forward is the f32 product of the bf16 inputs, rounded once to the output dtype.
  exact = jnp.einsum(eqn, a.astype(jnp.float32), b.astype(jnp.float32))
  got = fn(eqn, a, b).astype(jnp.float32)
  np.testing.assert_allclose(got, exact, rtol=float(jnp.finfo(out_dtype).eps), atol=1e-5)


@pytest.mark.parametrize("dimension_numbers,lhs,rhs", [
    ((((1,), (0,)), ((), ())), (3, 4), (4, 5)),  # nn.Dense
    ((((2,), (0,)), ((), ())), (2, 3, 4), (4, 5, 6)),  # DenseGeneral to heads
    ((((2, 3), (0, 1)), ((), ())), (2, 3, 5, 6), (5, 6, 4)),  # DenseGeneral from heads
    ((((2,), (1,)), ((0,), (0,))), (2, 3, 4), (2, 4, 5)),  # batched
])
def test_dot_general_is_lax_dot_general(dimension_numbers, lhs, rhs):
  a, b = _random(lhs, 0), _random(rhs, 1)
  np.testing.assert_allclose(precision.dot_general(a, b, dimension_numbers),
                             lax.dot_general(a, b, dimension_numbers), rtol=1e-6)


def _saved_shapes(policy_name: str, capsys) -> list[str]:
  """The shapes a checkpointed layer of two matmuls saves for its backward, besides its arguments: the
  unbatched matmul's output is [3,5], the batched one's [1,3,2]."""
  def layer(x, w, k):
    h = jnp.tanh(precision.einsum("TD,DF->TF", x, w))  # no batch dims
    return jnp.tanh(precision.einsum("BTF,BSF->BTS", h[None], k))  # batch dim B
  layer = jax.checkpoint(layer, policy=precision.remat_policy(policy_name))
  args = _random((3, 4), 0), _random((4, 5), 1), _random((1, 2, 5), 2)
  capsys.readouterr()
  jax.ad_checkpoint.print_saved_residuals(lambda *a: jnp.sum(layer(*a)), *args)
  lines = capsys.readouterr().out.splitlines()
  return sorted(re.match(r"\w+\[([\d,]*)\]", line).group(1) for line in lines if "from the argument" not in line)


def test_remat_policies_see_the_matmuls(capsys):
  assert _saved_shapes("dots_saveable", capsys) == ["1,3,2", "3,5"]
  assert _saved_shapes("dots_with_no_batch_dims_saveable", capsys) == ["3,5"]
  assert _saved_shapes("nothing_saveable", capsys) == []


def test_an_equation_without_a_matmul_gradient_is_refused():
  with pytest.raises(ValueError, match="appears nowhere else"):
    precision.einsum("ij,jk->k", _random((2, 3), 0), _random((3, 4), 1))
