"""Mixed precision: a matmul with a float32 result whose backward pass stays in the inputs' dtype.

`jnp.einsum(..., preferred_element_type=float32)` on bf16 inputs gives f32 logits (attention, the tied
output embedding), but its transpose multiplies the f32 cotangent by the bf16 operand: autodiff upcasts
both and runs the two backward matmuls in f32. `einsum_f32` rounds the cotangent to the inputs' dtype
first, so those matmuls run in bf16 like every other one (the usual mixed-precision treatment of
activation gradients); with f32 inputs it is exactly `jnp.einsum`.
"""
import functools

import jax
import jax.numpy as jnp


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def einsum_f32(eqn: str, a, b):
  """`jnp.einsum(eqn, a, b)` accumulated and returned in float32; a and b share one dtype."""
  return jnp.einsum(eqn, a, b, preferred_element_type=jnp.float32)


def _forward(eqn, a, b):
  return einsum_f32(eqn, a, b), (a, b)


def _backward(eqn, residuals, g):
  a, b = residuals
  _, vjp = jax.vjp(lambda a, b: jnp.einsum(eqn, a, b), a, b)
  return vjp(g.astype(a.dtype))


einsum_f32.defvjp(_forward, _backward)
