"""Decoding: big_vision's greedy tokens, cache == re-forward, eos, samplers, beam search, sharding."""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from components.paligemma import Model, configs, decode, decode_uncached, load

FIXTURES = ["tiny_v1", "tiny_mha", "tiny_v2"]


def fixture(bigvision_fixtures, name, **llm_overrides):
  cfg = configs.model_config(name.replace("_", "-"))
  cfg["llm"].update(llm_overrides)
  params = load(str(bigvision_fixtures / f"{name}.params.npz"), cfg)
  io = np.load(bigvision_fixtures / f"{name}.io.npz")
  batch = {"image": io["image"], "text": io["dec_text"], "mask_input": io["dec_mask_input"],
           "mask_ar": np.zeros_like(io["dec_text"])}
  return Model(**cfg), params, batch, io


def mixed_prompts(io, lengths, seed=0):
  """Right-padded prompts of the given lengths (bos first), one per fixture image in turn."""
  rng = np.random.default_rng(seed)
  text = np.zeros((len(lengths), max(lengths) + 1), np.int32)
  for row, n in enumerate(lengths):
    text[row, :n] = [2, *rng.integers(3, 300, n - 1)]
  return {"image": io["image"][np.arange(len(lengths)) % 2], "text": text,
          "mask_input": (text != 0).astype(np.int32), "mask_ar": np.zeros_like(text)}


def jitted(model, method, **static):
  return jax.jit(lambda params, *args: model.apply({"params": params}, *args, method=method, **static))


def cut_at_eos(tokens, eos):
  out = np.array(tokens)
  for row in out:
    hits = np.flatnonzero(row == eos)
    if hits.size:
      row[hits[0] + 1:] = 0
  return out


@pytest.mark.parametrize("name", FIXTURES)
def test_greedy_matches_big_vision(bigvision_fixtures, name):
  model, params, batch, io = fixture(bigvision_fixtures, name)
  tokens = decode(model, params, batch, max_decode_len=5)
  assert tokens.dtype == jnp.int32 and tokens.shape == (2, 5)
  np.testing.assert_array_equal(tokens, io["dec_tokens"])


@pytest.mark.parametrize("name, cache_dtype", [("tiny_v2", "float32"), ("tiny_v1", "bfloat16")])
def test_cached_equals_naive_reforward_with_mixed_prompt_lengths(bigvision_fixtures, name, cache_dtype):
  model, params, _, io = fixture(bigvision_fixtures, name, cache_dtype=cache_dtype)
  batch = mixed_prompts(io, [2, 7, 4])
  cached = decode(model, params, batch, max_decode_len=8)
  naive = decode_uncached(model, params, batch, max_decode_len=8)
  np.testing.assert_array_equal(cached, naive)
  assert (np.asarray(cached) != 0).all()  # eos 1 never came: all 8 steps were compared


def test_prefill_and_extend_logits_equal_the_forward_pass(bigvision_fixtures):
  """First token from uncapped prefill logits, later ones from soft-capped logits (big_vision's decoding)."""
  model, params, batch, io = fixture(bigvision_fixtures, "tiny_v2", cache_dtype="float32")
  batch = mixed_prompts(io, [3, 5])
  prefill = jitted(model, model.prefill, cache_size=16 + 6 + 2)
  logits0, cache = prefill(params, batch["image"], batch["text"], batch["mask_input"], batch["mask_ar"])
  token = jnp.argmax(logits0, -1)
  logits1, _ = jitted(model, model.extend)(params, token, cache)

  lengths = batch["mask_input"].sum(1)
  text = np.array(batch["text"])
  text[np.arange(2), lengths] = token
  mask_ar = np.where(np.arange(6) < lengths[:, None], 0, 1)
  full, _ = jitted(model, model.__call__)(params, batch["image"], text, mask_ar)
  np.testing.assert_allclose(logits0, full[np.arange(2), lengths - 1], atol=1e-5, rtol=0)
  np.testing.assert_allclose(logits1, 30 * jnp.tanh(full[np.arange(2), lengths] / 30), atol=1e-5, rtol=0)

  tokens, logprobs = decode(model, params, batch, max_decode_len=2, return_logprobs=True)
  np.testing.assert_array_equal(tokens[:, 0], token)
  expected = [jax.nn.log_softmax(l)[np.arange(2), t] for l, t in ((logits0, tokens[:, 0]), (logits1, tokens[:, 1]))]
  np.testing.assert_allclose(logprobs, np.stack(expected, 1), atol=1e-5, rtol=0)


def test_eos_cuts_each_row_and_stops(bigvision_fixtures):
  model, params, batch, _ = fixture(bigvision_fixtures, "tiny_v2")
  free, free_logp = decode(model, params, batch, max_decode_len=5, return_logprobs=True)
  eos = int(free[0, 2])  # pretend row 0's third token is eos
  tokens, logprobs = decode(model, params, batch, max_decode_len=5, eos_token=eos, return_logprobs=True)
  expected = cut_at_eos(free, eos)
  np.testing.assert_array_equal(tokens, expected)
  assert (np.asarray(tokens)[0, 3:] == 0).all()
  np.testing.assert_allclose(logprobs, np.where(expected != 0, free_logp, 0), atol=1e-6)

  eos = int(free[1, 0])  # row 1's very first token: its output is that one token
  tokens = decode(model, params, batch, max_decode_len=5, eos_token=eos)
  np.testing.assert_array_equal(tokens, cut_at_eos(free, eos))
  np.testing.assert_array_equal(tokens[1], [eos, 0, 0, 0, 0])


@pytest.mark.parametrize("name", ["tiny_v1", "tiny_v2"])
def test_beam_1_is_greedy(bigvision_fixtures, name):
  model, params, batch, io = fixture(bigvision_fixtures, name)
  greedy, greedy_logp = decode(model, params, batch, max_decode_len=5, return_logprobs=True)
  beam, beam_logp = decode(model, params, batch, max_decode_len=5, sampler="beam:1", return_logprobs=True)
  np.testing.assert_array_equal(beam, greedy)
  np.testing.assert_allclose(beam_logp, greedy_logp, atol=1e-5)


@pytest.mark.slow
def test_beam_as_wide_as_the_vocabulary_finds_the_best_sequence(bigvision_fixtures):
  """Two steps, 300 beams = exhaustive: the result must score max over [eos] and every (t1 != eos, t2)."""
  model, params, batch, _ = fixture(bigvision_fixtures, "tiny_v2")
  vocab, eos = 300, 1
  tokens, logprobs = decode(model, params, batch, max_decode_len=2, sampler="beam:300", return_logprobs=True)

  prefill = jitted(model, model.prefill, cache_size=16 + 6 + 2)
  logits0, cache = prefill(params, batch["image"], batch["text"], batch["mask_input"], batch["mask_ar"])
  extend = jitted(model, model.extend)
  for row in range(2):
    lp0 = jax.nn.log_softmax(logits0[row])
    row_cache = jax.tree.map(lambda x: jnp.repeat(x[row:row + 1], vocab, axis=0), cache)
    logits1, _ = extend(params, jnp.arange(vocab), row_cache)
    scores = lp0[:, None] + jax.nn.log_softmax(logits1)  # [t1, t2]
    best = max(float(lp0[eos]), float(jnp.where(jnp.arange(vocab)[:, None] == eos, -jnp.inf, scores).max()))
    np.testing.assert_allclose(float(logprobs[row].sum()), best, atol=1e-5)
    t1, t2 = (int(t) for t in tokens[row])
    own = float(lp0[eos]) if t1 == eos else float(scores[t1, t2])
    np.testing.assert_allclose(own, best, atol=1e-5)
    if t1 == eos:
      assert t2 == 0


def test_sampling_is_reproducible_and_seeded(bigvision_fixtures):
  model, params, batch, _ = fixture(bigvision_fixtures, "tiny_v2")
  for sampler in ("temperature:1.0", "nucleus:0.9"):
    a = decode(model, params, batch, max_decode_len=5, sampler=sampler, rng=jax.random.PRNGKey(3))
    b = decode(model, params, batch, max_decode_len=5, sampler=sampler, rng=jax.random.PRNGKey(3))
    c = decode(model, params, batch, max_decode_len=5, sampler=sampler, rng=jax.random.PRNGKey(4))
    np.testing.assert_array_equal(a, b)
    assert (np.asarray(a) != np.asarray(c)).any(), sampler  # near-uniform tiny model: seeds differ


def test_cold_temperature_and_tiny_nucleus_are_greedy(bigvision_fixtures):
  model, params, batch, io = fixture(bigvision_fixtures, "tiny_v2")
  for sampler in ("temperature:1e-6", "nucleus:1e-9"):
    np.testing.assert_array_equal(decode(model, params, batch, max_decode_len=5, sampler=sampler),
                                  io["dec_tokens"])


@pytest.mark.parametrize("sampler", ["top_k:3", "beam:0", "beam:1.5", "temperature:0", "nucleus:2", "greedy:1"])
def test_bad_sampler_fails_clearly(bigvision_fixtures, sampler):
  model, params, batch, _ = fixture(bigvision_fixtures, "tiny_v1")
  with pytest.raises(ValueError, match="expected one of greedy, temperature:T, nucleus:P, beam:N"):
    decode(model, params, batch, max_decode_len=5, sampler=sampler)


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["greedy", "beam:2", "temperature:1.0"])
def test_eight_devices_give_the_same_tokens_as_one(bigvision_fixtures, sampler):
  model, params, _, io = fixture(bigvision_fixtures, "tiny_v2")
  batch = mixed_prompts(io, [2, 6, 3, 5, 4, 7, 2, 6], seed=1)
  one = decode(model, params, batch, max_decode_len=6, sampler=sampler, return_logprobs=True)
  mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
  sharded = jax.device_put(batch, NamedSharding(mesh, PartitionSpec("data")))
  eight = decode(model, params, sharded, max_decode_len=6, sampler=sampler, return_logprobs=True)
  assert len(eight[0].sharding.device_set) == 8
  np.testing.assert_array_equal(eight[0], one[0])
  if sampler.startswith("temperature"):
    return  # a [1, V] draw is not row i of an [8, V] draw; greedy covers the log-probabilities
  # XLA:CPU picks its kernels by the rows on a device, and a log-probability is a large logit
  # minus a logsumexp, so batch 8 on one device differs from one row per device in the last
  # bits (~1e-4 here). The same per-device shape, one row alone, must agree to float32.
  alone = [decode(model, params, {k: v[row:row + 1] for k, v in batch.items()}, max_decode_len=6,
                  sampler=sampler, return_logprobs=True)[1] for row in range(8)]
  np.testing.assert_allclose(eight[1], np.concatenate(alone), rtol=1e-6, atol=1e-6)


def test_rows_that_pad_the_batch_come_back_empty(bigvision_fixtures):
  model, params, batch, io = fixture(bigvision_fixtures, "tiny_v2")
  eos = int(io["dec_tokens"][0, 1])  # row 0 ends at its second token; row 1 would never stop
  assert eos not in io["dec_tokens"][1]
  tokens = decode(model, params, {**batch, "_mask": np.array([True, False])}, max_decode_len=5, eos_token=eos)
  np.testing.assert_array_equal(tokens[0], [*io["dec_tokens"][0, :2], 0, 0, 0])
  np.testing.assert_array_equal(tokens[1], 0)  # a padding row comes back empty
  np.testing.assert_array_equal(decode(model, params, batch, max_decode_len=5, eos_token=eos)[1], io["dec_tokens"][1])


def test_unscanned_model_decodes_the_same(bigvision_fixtures):
  model, params, batch, io = fixture(bigvision_fixtures, "tiny_v1", scan=False)
  np.testing.assert_array_equal(decode(model, params, batch, max_decode_len=5, sampler="beam:1"), io["dec_tokens"])


def test_nucleus_and_temperature_sample_the_right_distribution():
  sample = importlib.import_module("components.paligemma.decode")._sample
  logits = jnp.asarray(np.random.default_rng(0).normal(size=(3, 40)) * 2, jnp.float32)
  keys = jax.random.split(jax.random.PRNGKey(0), 4000)
  probs = np.asarray(jax.nn.softmax(logits))
  order = np.argsort(-probs, axis=-1)
  nucleus = np.asarray(jax.vmap(lambda k: sample("nucleus", 0.6, logits, k))(keys))  # [draws, rows]
  for row in range(3):  # only the smallest top set whose mass reaches 0.6, each of them drawn
    size = int(np.searchsorted(np.cumsum(probs[row, order[row]]), 0.6)) + 1
    assert set(nucleus[:, row]) == set(order[row, :size])
  hot = np.asarray(jax.vmap(lambda k: sample("temperature", 2.0, logits, k))(keys))
  for row in range(3):
    freq = np.bincount(hot[:, row], minlength=40) / len(keys)
    np.testing.assert_allclose(freq, jax.nn.softmax(logits[row] / 2.0), atol=0.03)
