"""to_hf / from_hf against transformers' own PaliGemmaForConditionalGeneration (CPU torch, float32)."""
import json

import ml_dtypes
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch (dev extra) is needed to run transformers")
transformers = pytest.importorskip("transformers", reason="transformers (dev extra) is needed for parity tests")
from safetensors.numpy import load_file, save_file as save_np  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from components import paligemma  # noqa: E402
from components.paligemma import configs  # noqa: E402
from components.paligemma.checkpoint import flatten_params, param_shapes, unflatten_params  # noqa: E402

TOL = 1e-4
ARCH_FIELDS = ("vocab_size", "width", "depth", "mlp_dim", "num_heads", "num_kv_heads", "head_dim",
               "attn_logits_softcap", "final_logits_softcap", "post_norms", "query_pre_attn_norm")


def random_params(model_cfg, seed=0, dtype=np.float32):
  rng = np.random.default_rng(seed)
  return unflatten_params({
      name: rng.normal(0, 0.02 if name == "llm/embedder/input_embedding" else 0.2, shape).astype(dtype)
      for name, shape in param_shapes(model_cfg).items()})


def parity_cfg(name):
  cfg = configs.model_config(name)
  cfg["llm"]["cache_dtype"] = "float32"  # transformers decodes in f32; a bf16 cache could flip a near-tie.
  return cfg


def inputs(model_cfg, seed=1, batch=2, prefix=5, suffix=4):
  rng = np.random.default_rng(seed)
  size, vocab = configs.image_size(model_cfg), configs.resolve_llm(model_cfg["llm"])["vocab_size"]
  image = rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
  text = rng.integers(3, vocab, (batch, prefix + suffix)).astype(np.int32)
  text[:, 0] = 2  # bos
  mask_ar = np.array([[0] * prefix + [1] * suffix] * batch, np.int32)
  return image, text, mask_ar


def ours(params, model_cfg, image, text, mask_ar):
  logits, aux = paligemma.Model(**model_cfg).apply({"params": params}, image, text, mask_ar)
  return np.asarray(logits), np.asarray(aux["img/zimg"])


def theirs(hf_model, image_token, num_image_tokens, image, text, mask_ar):
  """transformers' logits at text positions and its image tokens; mask_ar 0/1 = token_type_ids 0/1."""
  batch = len(text)
  ids = torch.tensor(np.concatenate([np.full((batch, num_image_tokens), image_token), text], 1))
  token_type_ids = torch.tensor(np.concatenate([np.zeros((batch, num_image_tokens), np.int32), mask_ar], 1))
  with torch.no_grad():
    out = hf_model(input_ids=ids, pixel_values=torch.tensor(image.transpose(0, 3, 1, 2)),
                   attention_mask=torch.ones_like(ids), token_type_ids=token_type_ids)
  zimg = out.image_hidden_states.numpy().reshape(batch, num_image_tokens, -1)
  return out.logits.numpy()[:, num_image_tokens:], zimg


def load_hf(path):
  return transformers.PaliGemmaForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()


CONFIGS = ["tiny-v1", "tiny-mha", "tiny-v2", pytest.param("small-v2", marks=pytest.mark.slow)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """name -> (model_cfg, params, transformers model loaded from our to_hf output); built once per config."""
  cache = {}

  def get(name):
    if name not in cache:
      cfg = parity_cfg(name)
      params = random_params(cfg)
      out = tmp_path_factory.mktemp(name)
      paligemma.to_hf(params, cfg, out)
      cache[name] = cfg, params, load_hf(out), json.loads((out / "config.json").read_text())
    return cache[name]
  return get


@pytest.mark.parametrize("name", CONFIGS)
def test_to_hf_gives_same_logits(exported, name):
  cfg, params, hf_model, config = exported(name)
  vocab, n_img = configs.resolve_llm(cfg["llm"])["vocab_size"], configs.num_image_tokens(cfg)
  assert config["image_token_index"] == vocab and config["vision_config"]["vision_use_head"] is False
  image, text, mask_ar = inputs(cfg)
  logits, zimg = ours(params, cfg, image, text, mask_ar)
  hf_logits, hf_zimg = theirs(hf_model, vocab, n_img, image, text, mask_ar)
  assert hf_logits.shape[-1] % 64 == 0 and hf_logits.shape[-1] > vocab  # <image> + transformers' padding
  np.testing.assert_allclose(hf_zimg, zimg, atol=TOL, rtol=0)
  np.testing.assert_allclose(hf_logits[..., :vocab], logits, atol=TOL, rtol=0)


@pytest.mark.slow  # ~15 s each: compiles our cached decoder
@pytest.mark.parametrize("name", CONFIGS)
def test_to_hf_gives_same_greedy_generation(exported, name):
  """Prompts of different lengths in one batch: ours right-pads, transformers left-pads."""
  cfg, params, hf_model, _ = exported(name)
  vocab, n_img = configs.resolve_llm(cfg["llm"])["vocab_size"], configs.num_image_tokens(cfg)
  image, text, _ = inputs(cfg)
  max_len, lengths = 6, (5, 3)
  prompt = np.zeros((2, 5), np.int32)
  for row, n in enumerate(lengths):
    prompt[row, :n] = text[row, :n]
  mask_input = (np.arange(5)[None] < np.array(lengths)[:, None]).astype(np.int32)
  batch = {"image": image, "text": prompt, "mask_ar": np.zeros_like(prompt), "mask_input": mask_input}
  tokens = np.asarray(paligemma.decode(paligemma.Model(**cfg), params, batch, max_decode_len=max_len))

  ids = np.zeros((2, n_img + 5), np.int64)
  attention = np.zeros_like(ids)
  for row, n in enumerate(lengths):
    ids[row, -(n_img + n):] = np.concatenate([np.full(n_img, vocab), prompt[row, :n]])
    attention[row, -(n_img + n):] = 1
  with torch.no_grad():
    out = hf_model.generate(input_ids=torch.tensor(ids), pixel_values=torch.tensor(image.transpose(0, 3, 1, 2)),
                            attention_mask=torch.tensor(attention), token_type_ids=torch.zeros_like(torch.tensor(ids)),
                            max_new_tokens=max_len, do_sample=False)
  generated = out[:, ids.shape[1]:].numpy()
  generated = np.pad(generated, ((0, 0), (0, max_len - generated.shape[1])))
  assert np.count_nonzero(tokens) > 2  # the comparison is about real continuations, not an immediate eos
  np.testing.assert_array_equal(generated, tokens)


def hf_random_model(kind, seed=0):
  """A randomly initialised transformers PaliGemma, every weight random (norms included)."""
  text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, head_dim=16,
              vocab_size=320)
  if kind == "gemma":
    text |= dict(model_type="gemma", num_key_value_heads=1)
  elif kind == "gemma_mha":  # -> one qkv_einsum
    text |= dict(model_type="gemma", num_key_value_heads=4)
  elif kind == "gemma2":
    text |= dict(model_type="gemma2", num_key_value_heads=2, query_pre_attn_scalar=16)
  else:  # Gemma 2 with the 27B query scaling, (width/heads)**-0.5 with head_dim != width/heads.
    text |= dict(model_type="gemma2", num_key_value_heads=2, head_dim=32, query_pre_attn_scalar=16)
  config = transformers.PaliGemmaConfig(
      vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=2, patch_size=14, image_size=42),
      text_config=text, image_token_index=300, projection_dim=64, hidden_size=64)
  torch.manual_seed(seed)
  model = transformers.PaliGemmaForConditionalGeneration(config).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      p.normal_(0, 0.02 if "embed_tokens" in name else 0.2)
  return model


def _legacy(name):  # the released hub checkpoints' names
  name = name.replace("model.vision_tower.", "vision_tower.vision_model.")
  name = name.replace("model.language_model.", "language_model.model.")
  return name.replace("model.multi_modal_projector.", "multi_modal_projector.")


@pytest.mark.parametrize("kind,layout", [("gemma", "save_pretrained"), ("gemma2", "save_pretrained"),
                                         ("gemma2", "state_dict"), ("gemma", "legacy"), ("gemma_mha", "legacy"),
                                         ("gemma2_emb_per_head", "save_pretrained")])
def test_from_hf_gives_same_logits(tmp_path, kind, layout):
  hf_model = hf_random_model(kind)
  if layout == "save_pretrained":
    hf_model.save_pretrained(tmp_path)
  else:  # transformers >= 4.52's in-memory names, or the hub's names
    hf_model.config.save_pretrained(tmp_path)
    rename = (lambda n: n) if layout == "state_dict" else _legacy
    save_file({rename(k): v.clone().contiguous() for k, v in hf_model.state_dict().items()},
              tmp_path / "model.safetensors", metadata={"format": "pt"})
  params, cfg = paligemma.from_hf(tmp_path)

  llm = configs.resolve_llm(cfg["llm"])
  assert llm["vocab_size"] == 300  # the rows from <image> on are transformers' and dropped
  assert params["llm"]["embedder"]["input_embedding"].shape == (300, 64)
  assert set(flatten_params(params)) == set(param_shapes(cfg))
  assert llm["query_pre_attn_norm"] == ("rsqrt_emb_per_head" if kind == "gemma2_emb_per_head" else "rsqrt_head_dim")
  image, text, mask_ar = inputs(cfg)
  logits, zimg = ours(params, cfg, image, text, mask_ar)
  hf_logits, hf_zimg = theirs(hf_model, 300, configs.num_image_tokens(cfg), image, text, mask_ar)
  assert ("qkv_einsum" in params["llm"]["layers"]["attn"]) == (kind == "gemma_mha")
  if kind.startswith("gemma2"):  # transformers caps every logit; the cap is carried over as llm.final_logits_softcap
    assert llm["final_logits_softcap"] == 30.0
    logits = np.tanh(logits / 30.0) * 30.0
  np.testing.assert_allclose(hf_zimg, zimg, atol=TOL, rtol=0)
  np.testing.assert_allclose(hf_logits[..., :300], logits, atol=TOL, rtol=0)


@pytest.mark.parametrize("name,dtype,shard_bytes", [("tiny-mha", "bfloat16", None), ("tiny-v2", "float32", 40_000),
                                                    ("tiny-v1", "float16", None)])
def test_round_trip_is_bit_identical(tmp_path, name, dtype, shard_bytes):
  cfg = configs.model_config(name)
  params = random_params(cfg, dtype=ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype))
  kwargs = {} if shard_bytes is None else {"max_shard_bytes": shard_bytes}
  paligemma.to_hf(params, cfg, tmp_path, **kwargs)
  if shard_bytes:
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
  # transformers reads every layout and dtype we write, values unchanged.
  torch_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[dtype]
  hf_model = transformers.PaliGemmaForConditionalGeneration.from_pretrained(tmp_path, dtype=torch_dtype)
  embedding = params["llm"]["embedder"]["input_embedding"]
  np.testing.assert_array_equal(
      hf_model.get_input_embeddings().weight[:len(embedding)].detach().float().numpy(), embedding.astype(np.float32))

  back, back_cfg = paligemma.from_hf(tmp_path)
  flat, flat_back = flatten_params(params), flatten_params(back)
  assert set(flat) == set(flat_back)
  for key in flat:
    assert flat_back[key].dtype == flat[key].dtype, key
    np.testing.assert_array_equal(flat_back[key], flat[key], err_msg=key)
  want, got = configs.resolve_llm(cfg["llm"]), configs.resolve_llm(back_cfg["llm"])
  assert {k: got[k] for k in ARCH_FIELDS} == {k: want[k] for k in ARCH_FIELDS}
  assert configs.resolve_img(back_cfg["img"]) == configs.resolve_img(cfg["img"])


def test_to_hf_rejects_params_of_another_model(tmp_path):
  params = random_params(configs.model_config("tiny-v1"))
  with pytest.raises(ValueError, match=r"llm.num_kv_heads: 1, 2.*llm.post_norms: False, True"):
    paligemma.to_hf(params, configs.model_config("tiny-v2"), tmp_path)


def test_from_hf_names_what_is_missing(tmp_path):
  cfg = configs.model_config("tiny-v1")
  paligemma.to_hf(random_params(cfg), cfg, tmp_path / "ok")
  config = (tmp_path / "ok" / "config.json").read_text()
  tensors = load_file(tmp_path / "ok" / "model.safetensors")
  del tensors["language_model.model.layers.1.mlp.up_proj.weight"]
  (tmp_path / "broken").mkdir()
  (tmp_path / "broken" / "config.json").write_text(config)
  save_np(tensors, tmp_path / "broken" / "model.safetensors")
  with pytest.raises(ValueError, match=r"language_model\.model\.layers\.1\.mlp\.up_proj\.weight.*missing"):
    paligemma.from_hf(tmp_path / "broken")
  with pytest.raises(FileNotFoundError, match="not in the local Hugging Face cache"):
    paligemma.from_hf("hf://nobody-here/no-such-paligemma")


def test_from_hf_reads_a_repo_from_the_local_hub_cache(tmp_path, monkeypatch):
  """hf://org/repo resolves through huggingface_hub's cache layout (what hf_hub_download leaves behind)."""
  import huggingface_hub

  cfg = configs.model_config("tiny-v2")
  params = random_params(cfg, seed=5)
  commit = "0123456789abcdef0123456789abcdef01234567"
  repo = tmp_path / "hub" / "models--acme--tiny-paligemma"
  paligemma.to_hf(params, cfg, repo / "snapshots" / commit)
  (repo / "refs").mkdir()
  (repo / "refs" / "main").write_text(commit)
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
  back, _ = paligemma.from_hf("hf://acme/tiny-paligemma")
  flat = flatten_params(params)
  assert all(np.array_equal(v, flat[k]) for k, v in flatten_params(back).items())


def test_from_hf_fills_transformers_defaults_of_a_terse_hub_config(tmp_path):
  """The released checkpoints' config.json leaves most fields to transformers' defaults (head_dim, the
  Gemma 2 softcaps and query scalar, image_size); sizes then come from the tensors."""
  cfg = configs.model_config("tiny-v2")
  cfg["llm"]["head_dim"] = 8  # neither Gemma's default (256) nor width/heads: must come from the tensors
  params = random_params(cfg, seed=7)
  paligemma.to_hf(params, cfg, tmp_path)
  full = json.loads((tmp_path / "config.json").read_text())
  keep_text = ("model_type", "hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers",
               "num_key_value_heads", "vocab_size", "query_pre_attn_scalar")
  keep_vision = ("model_type", "hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers",
                 "patch_size", "projection_dim", "vision_use_head")
  terse = {"architectures": full["architectures"], "model_type": "paligemma", "image_token_index": 300,
           "text_config": {k: full["text_config"][k] for k in keep_text},
           "vision_config": {k: full["vision_config"][k] for k in keep_vision}}
  (tmp_path / "config.json").write_text(json.dumps(terse))
  back, back_cfg = paligemma.from_hf(tmp_path)
  llm = configs.resolve_llm(back_cfg["llm"])
  assert llm["attn_logits_softcap"] == 50.0 and llm["final_logits_softcap"] == 30.0  # Gemma2Config defaults
  assert configs.resolve_img(back_cfg["img"]) == configs.resolve_img(cfg["img"])
  flat = flatten_params(params)
  assert all(np.array_equal(v, flat[k]) for k, v in flatten_params(back).items())


@pytest.mark.parametrize("name", ["paligemma-3b-pt-224", "paligemma2-3b-pt-448", "paligemma2-28b-pt-224"])
def test_full_size_names_and_shapes_match_transformers(name):
  """Released sizes, built without memory: our names and shapes for every tensor equal those of transformers'
  own model built from the config we export (meta device)."""
  import types

  from components.paligemma import _hf_layout as layout
  from components.paligemma import hf

  cfg = configs.model_config(name)
  dims = layout.dims_from_params({k: types.SimpleNamespace(shape=s) for k, s in param_shapes(cfg).items()})
  bv = layout.bv_shapes(dims)
  ours = {e.hf: tuple(layout.TRANSFORMS[e.kind].hf_shape(bv[e.bv][len(e.index):])) for e in layout.entries(dims)}
  config = hf._hf_config(dims, configs.resolve_llm(cfg["llm"]), configs.resolve_img(cfg["img"]), np.dtype("float32"))
  with torch.device("meta"):
    model = transformers.PaliGemmaForConditionalGeneration(transformers.PaliGemmaConfig.from_dict(config))
  theirs = {layout.canonical_name(k): tuple(v.shape) for k, v in model.state_dict().items() if k != "lm_head.weight"}
  assert ours == theirs
  assert config["image_token_index"] == 257_152 and config["text_config"]["vocab_size"] == 257_216
  assert model.config.text_config.num_image_tokens == configs.num_image_tokens(cfg)


def test_to_hf_into_a_used_directory_replaces_its_weights(tmp_path):
  """A sharded export over a single-file one (and back) leaves only the new weights to read."""
  cfg = configs.model_config("tiny-v1")
  first, second = random_params(cfg, seed=1), random_params(cfg, seed=2)
  paligemma.to_hf(first, cfg, tmp_path, max_shard_bytes=30_000)
  paligemma.to_hf(second, cfg, tmp_path)
  assert sorted(p.name for p in tmp_path.glob("model*")) == ["model.safetensors"]
  back, _ = paligemma.from_hf(tmp_path)
  flat = flatten_params(second)
  assert all(np.array_equal(v, flat[k]) for k, v in flatten_params(back).items())
