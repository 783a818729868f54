"""Autoregressive decoding with a KV cache, as big_vision's PaliGemma `predict_fns` decode.

    tokens = decode(model, params, batch, max_decode_len=32)                       # int32[B, M]
    tokens, logprobs = decode(..., sampler="nucleus:0.9", rng=key, return_logprobs=True)

`batch`: `image` f32[B, H, W, 3], `text` int[B, T] (prompts right-padded), `mask_ar` int[B, T],
`mask_input` int[B, T] (1 on real prompt tokens); optionally big_vision's `_mask` bool[B] (False on rows
that only pad the batch: they never hold up the early stop and come back as zeros).

Samplers (a string, so that it fits a config or a CLI flag):
  greedy         argmax.
  temperature:T  sample from softmax(logits / T).
  nucleus:P      sample among the most likely tokens whose probability mass reaches P (big_vision's rule).
  beam:N         beam search over the summed log-probability, no length normalisation. Finished
                 hypotheses keep their slot in the beam, so beam:1 is greedy; decoding stops when each
                 row's best hypothesis has finished (no live one can beat it: log-probs only decrease);
                 at max_decode_len the best hypothesis is returned even if it never emitted eos.

Soft-cap: big_vision takes the first token from the prefill logits (never soft-capped) and every later
one from its full model call (soft-capped when the model has `final_logits_softcap`); we do the same, so
sampled tokens and log-probs match big_vision. Greedy and beam order are unaffected either way.

Everything runs in one jitted program per (model config, lengths, sampler) with a `while_loop` that
stops when every row is done. Sharding follows the inputs: put the batch on a mesh with
`jax.device_put(batch, NamedSharding(mesh, P("data")))` and rows decode on their own devices.

Each step reads the LLM's weights once and the cache once, near the memory-bandwidth bound
(benchmarks/decode_vs_transformers.py): the image and prompt are encoded once (prefill); decoding runs
without remat and with the LLM's layer loop unrolled (a step is one straight-line program, which XLA's
GPU command buffers replay in one launch); the stacked layer weights are split once per call, outside
the loop (`_split_layers`), so no step copies a layer's weights out of the stack; and a step writes only
the new token's k/v into the cache, in place (model.extend).
"""
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np

from components.paligemma import configs
from components.paligemma.model import Model

_NEG = -1e30  # "impossible" beam score; sums of a few stay finite in f32.
_SAMPLERS = ("greedy", "temperature:T", "nucleus:P", "beam:N")


def parse_sampler(sampler: str) -> tuple[str, float]:
  """"nucleus:0.9" -> ("nucleus", 0.9); "greedy" -> ("greedy", 0.0). A clear error otherwise."""
  kind, _, arg = sampler.partition(":")
  try:
    if kind == "greedy" and not arg:
      return kind, 0.0
    if kind == "temperature" and float(arg) > 0:
      return kind, float(arg)
    if kind == "nucleus" and 0 < float(arg) <= 1:
      return kind, float(arg)
    if kind == "beam" and int(arg) >= 1:
      return kind, float(int(arg))
  except ValueError:
    pass
  raise ValueError(f"sampler={sampler!r}; expected one of {', '.join(_SAMPLERS)} "
                   "(T > 0, 0 < P <= 1, N >= 1 an integer), e.g. 'nucleus:0.9'.")


def _sample(kind, arg, logits, rng):  # f32[B, V] -> int32[B]
  if kind == "greedy":
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  if kind == "nucleus":  # keep tokens at least as likely as the one where the cumulative mass reaches P.
    logits_sorted = jnp.sort(logits, axis=-1, descending=True)
    cum_probs = jnp.cumsum(jax.nn.softmax(logits_sorted, axis=-1), axis=-1)
    index = jnp.minimum(jnp.sum(cum_probs < arg, axis=-1, keepdims=True), logits.shape[-1] - 1)  # P=1 rounding
    cutoff = jnp.take_along_axis(logits_sorted, index, axis=-1)
    logits = jnp.where(logits < cutoff, -jnp.inf, logits)
  else:  # temperature
    logits = logits / arg
  return jax.random.categorical(rng, logits).astype(jnp.int32)


def _sampling_loop(extend, logits, cache, valid, rng, *, kind, arg, max_decode_len, eos_token):
  """greedy / temperature / nucleus: one token per row per step."""
  batch = logits.shape[0]

  def pick(step, logits, tokens, logprobs, done):
    token = _sample(kind, arg, logits, jax.random.fold_in(rng, step))
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), token[:, None], axis=-1)[:, 0]
    tokens = tokens.at[:, step].set(jnp.where(done, 0, token))
    logprobs = logprobs.at[:, step].set(jnp.where(done, 0.0, logp))
    return token, tokens, logprobs, done | (token == eos_token)

  tokens = jnp.zeros((batch, max_decode_len), jnp.int32)
  logprobs = jnp.zeros((batch, max_decode_len), jnp.float32)
  token, tokens, logprobs, done = pick(0, logits, tokens, logprobs, ~valid)

  def cond(state):
    step, _, _, _, _, done = state
    return (step < max_decode_len) & ~jnp.all(done)

  def body(state):
    step, token, cache, tokens, logprobs, done = state
    logits, cache = extend(token, cache)
    token, tokens, logprobs, done = pick(step, logits, tokens, logprobs, done)
    return step + 1, token, cache, tokens, logprobs, done

  state = jax.lax.while_loop(cond, body, (1, token, cache, tokens, logprobs, done))
  return state[3], state[4]


def _beam_loop(extend, logits, cache, valid, *, beams, max_decode_len, eos_token):
  """Beam search; rows of the cache are [B * beams] with each example's beams adjacent."""
  batch, vocab = logits.shape
  if beams > vocab:
    raise ValueError(f"beam:{beams} is wider than the vocabulary ({vocab}).")
  cache = jax.tree.map(lambda x: jnp.repeat(x, beams, axis=0), cache)
  logits = jnp.repeat(logits, beams, axis=0)
  # Start with one live hypothesis per row (the others impossible), so the first step expands only it.
  scores = jnp.tile(jnp.array([0.0] + [_NEG] * (beams - 1), jnp.float32), (batch, 1))  # [B, N]
  finished = jnp.zeros((batch, beams), bool)
  tokens = jnp.zeros((batch, beams, max_decode_len), jnp.int32)
  logprobs = jnp.zeros((batch, beams, max_decode_len), jnp.float32)

  def step_fn(step, logits, cache, scores, finished, tokens, logprobs):
    logp = jax.nn.log_softmax(logits, axis=-1).reshape(batch, beams, vocab)
    cand_scores, cand_tokens = jax.lax.top_k(scores[..., None] + logp, beams)  # [B, N, N]
    # A finished hypothesis competes once, unchanged (next token: padding 0).
    carried = jnp.concatenate([scores[..., None], jnp.full((batch, beams, beams - 1), _NEG)], axis=-1)
    cand_scores = jnp.where(finished[..., None], carried, cand_scores).reshape(batch, beams * beams)
    cand_tokens = jnp.where(finished[..., None], 0, cand_tokens).reshape(batch, beams * beams)
    scores, pick = jax.lax.top_k(cand_scores, beams)  # sorted: beam 0 is the best.
    parent = pick // beams
    token = jnp.take_along_axis(cand_tokens, pick, axis=1)
    was_finished = jnp.take_along_axis(finished, parent, axis=1)
    token_logp = jnp.take_along_axis(jnp.take_along_axis(logp, parent[..., None], axis=1), token[..., None], -1)
    tokens = jnp.take_along_axis(tokens, parent[..., None], axis=1).at[..., step].set(token)
    logprobs = jnp.take_along_axis(logprobs, parent[..., None], axis=1).at[..., step].set(
        jnp.where(was_finished, 0.0, token_logp[..., 0]))
    rows = (jnp.arange(batch)[:, None] * beams + parent).reshape(-1)
    cache = jax.tree.map(lambda x: x[rows], cache)
    return token.reshape(-1), cache, scores, was_finished | (token == eos_token), tokens, logprobs

  state = (1, *step_fn(0, logits, cache, scores, finished, tokens, logprobs))

  def cond(state):
    step, _, _, _, finished, _, _ = state
    return (step < max_decode_len) & ~jnp.all(finished[:, 0] | ~valid)

  def body(state):
    step, token, cache, scores, finished, tokens, logprobs = state
    logits, cache = extend(token, cache)
    return (step + 1, *step_fn(step, logits, cache, scores, finished, tokens, logprobs))

  _, _, _, _, _, tokens, logprobs = jax.lax.while_loop(cond, body, state)
  return tokens[:, 0], logprobs[:, 0]


def _model_key(model: Model) -> str:
  return json.dumps({"llm": dict(model.llm), "img": dict(model.img)}, sort_keys=True,
                    default=lambda o: o.item() if hasattr(o, "item") else str(o))


def _decoding_model(model_cfg: dict) -> Model:
  """The model as decoding runs it: same weights and math, no remat (nothing is differentiated), the
  LLM's layer loop unrolled."""
  return Model(llm={**model_cfg["llm"], "remat_policy": "none", "scan": False},
               img={**model_cfg["img"], "remat_policy": "none"})


def _split_layers(params):
  """A function returning `params` with the LLM's stacked layer weights [L, ...] split into per-layer
  arrays here (once, outside the decoding loop) and re-stacked where it is called (inside the loop): XLA
  folds each layer's slice of the re-stacked array back to its piece, so a step reads the weights in
  place instead of copying every layer's slice out of the stack first."""
  layers = params["llm"]["layers"]
  depth = jax.tree.leaves(layers)[0].shape[0]
  pieces = [jax.tree.map(lambda x, i=i: x[i], layers) for i in range(depth)]
  return lambda: {**params, "llm": {**params["llm"], "layers": jax.tree.map(lambda *x: jnp.stack(x), *pieces)}}


@functools.lru_cache(maxsize=16)
def _compiled(model_key: str, max_decode_len: int, kind: str, beams: int):
  """One jitted decoder per model config, length and sampler kind; eos and T/P are traced arguments."""
  model_cfg = json.loads(model_key)
  model = _decoding_model(model_cfg)
  image_tokens = configs.num_image_tokens(model_cfg)

  def run(params, batch, rng, eos_token, arg):
    logits, cache = model.apply(
        {"params": params}, batch["image"], batch["text"], batch["mask_input"], batch["mask_ar"],
        cache_size=image_tokens + batch["text"].shape[1] + max_decode_len, method=model.prefill)
    split = _split_layers(params)
    extend = lambda tokens, cache: model.apply({"params": split()}, tokens, cache, method=model.extend)
    loop = dict(max_decode_len=max_decode_len, eos_token=eos_token)
    if kind == "beam":
      return _beam_loop(extend, logits, cache, batch["_mask"], beams=beams, **loop)
    return _sampling_loop(extend, logits, cache, batch["_mask"], rng, kind=kind, arg=arg, **loop)

  return jax.jit(run)


def decode(model, params, batch, *, max_decode_len, sampler="greedy", eos_token=1, rng=None,
           return_logprobs=False):
  """Continues each prompt for up to `max_decode_len` tokens.

  Returns int32[B, max_decode_len]: each row's tokens up to and including its first `eos_token`, then 0;
  with `return_logprobs`, also f32[B, max_decode_len] log-probabilities of the chosen tokens (0 after eos).
  `rng` seeds the sampling samplers (default: key 0, so runs are reproducible).
  """
  kind, arg = parse_sampler(sampler)  # a bad sampler fails before anything is compiled.
  missing = [k for k in ("image", "text", "mask_ar", "mask_input") if k not in batch]
  if missing:
    raise ValueError(f"decode: batch lacks {missing}; it needs image, text, mask_ar and mask_input.")
  inputs = {k: batch[k] for k in ("image", "text", "mask_ar", "mask_input")}
  inputs["_mask"] = batch.get("_mask", np.ones(len(batch["text"]), bool))
  rng = jax.random.PRNGKey(0) if rng is None else rng
  run = _compiled(_model_key(model), int(max_decode_len), kind, int(arg) if kind == "beam" else 0)
  tokens, logprobs = run(params, inputs, rng, jnp.int32(eos_token), jnp.float32(arg))
  return (tokens, logprobs) if return_logprobs else tokens


@functools.lru_cache(maxsize=4)
def _compiled_uncached(model_key: str, max_decode_len: int, eos_token: int):
  model = _decoding_model(json.loads(model_key))

  def run(params, batch):
    text, mask_input = batch["text"], batch["mask_input"].astype(bool)
    batch_size, prompt_len = text.shape
    lengths = jnp.sum(mask_input, axis=1)
    # Prompt then generated tokens, packed per row; what follows is causal padding no token attends to.
    pad = ((0, 0), (0, max_decode_len))
    buf = jnp.pad(jnp.where(mask_input, text, 0), pad)
    mask_ar = jnp.pad(jnp.where(mask_input, batch["mask_ar"], 1), pad, constant_values=1)
    rows = jnp.arange(batch_size)

    def cond(state):
      step, _, _, done = state
      return (step < max_decode_len) & ~jnp.all(done)

    def body(state):
      step, buf, tokens, done = state
      logits, _ = model.apply({"params": params}, batch["image"], buf, mask_ar)
      token = jnp.argmax(logits[rows, lengths - 1 + step], axis=-1).astype(jnp.int32)
      buf = buf.at[rows, lengths + step].set(token)
      tokens = tokens.at[:, step].set(jnp.where(done, 0, token))
      return step + 1, buf, tokens, done | (token == eos_token)

    tokens = jnp.zeros((batch_size, max_decode_len), jnp.int32)
    return jax.lax.while_loop(cond, body, (0, buf, tokens, jnp.zeros(batch_size, bool)))[2]

  return jax.jit(run)


def decode_uncached(model, params, batch, *, max_decode_len, eos_token=1):
  """Greedy decoding that re-runs the whole model for every token: the reference that tests and
  benchmarks/decode_cache.py hold `decode` against. Same output layout as `decode`."""
  inputs = {k: batch[k] for k in ("image", "text", "mask_ar", "mask_input")}
  return _compiled_uncached(_model_key(model), int(max_decode_len), int(eos_token))(params, inputs)
