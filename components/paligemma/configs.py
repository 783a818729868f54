"""Named PaliGemma configurations: model variants, released models and small test models.

A `model_cfg` is a plain JSON-serialisable dict `{"llm": {...}, "img": {...}}`, big_vision style: each
tower names a `variant` and may override any of its fields. `Model(**model_cfg)` builds it;
`resolve_llm`/`resolve_img` give every field explicitly (what the towers and converters read).

Numbers: ../shared/reference/PALIGEMMA.md §2 (read from big_vision's gemma.py and vit.py).
"""
import re

import jax

from components.paligemma import attention

PALIGEMMA_VOCAB = 257_152  # 256000 Gemma pieces + 1024 <locNNNN> + 128 <segNNN>.

# Fields every llm variant defines; `Model(llm=...)` accepts exactly these plus `variant`.
_GEMMA_COMMON = dict(
    vocab_size=PALIGEMMA_VOCAB,
    attn_logits_softcap=0.0,
    final_logits_softcap=0.0,
    post_norms=False,
    query_pre_attn_norm="rsqrt_head_dim",  # q *= head_dim**-0.5; 27B: (width/heads)**-0.5.
    dropout=0.0,
    scan=True,
    remat_policy="nothing_saveable",
    dtype="float32",  # matmul dtype; weights, norms, softmax and the residual stream stay f32
    cache_dtype="bfloat16",  # big_vision's default: halves the KV cache; prefill attends to it too.
    attention="auto",  # attention.IMPLEMENTATIONS; "auto" picks by backend (attention.choose)
)
_GEMMA2 = dict(attn_logits_softcap=50.0, final_logits_softcap=30.0, post_norms=True)

GEMMA_2B = dict(_GEMMA_COMMON, width=2048, depth=18, mlp_dim=16_384, num_heads=8, num_kv_heads=1, head_dim=256)
GEMMA2_2B = dict(_GEMMA_COMMON, **_GEMMA2, width=2304, depth=26, mlp_dim=9_216, num_heads=8, num_kv_heads=4,
                 head_dim=256)
GEMMA2_9B = dict(_GEMMA_COMMON, **_GEMMA2, width=3584, depth=42, mlp_dim=14_336, num_heads=16, num_kv_heads=8,
                 head_dim=256)
GEMMA2_27B = dict(_GEMMA_COMMON, **_GEMMA2, width=4608, depth=46, mlp_dim=36_864, num_heads=32, num_kv_heads=16,
                  head_dim=128, query_pre_attn_norm="rsqrt_emb_per_head")
LLM_VARIANTS = {"gemma_2b": GEMMA_2B, "gemma2_2b": GEMMA2_2B, "gemma2_9b": GEMMA2_9B, "gemma2_27b": GEMMA2_27B}

SO400M_14 = dict(width=1152, depth=27, mlp_dim=4304, num_heads=16, patch_size=14, image_size=224,
                 scan=True, remat_policy="nothing_saveable", dtype="float32", attention="auto")
IMG_VARIANTS = {"So400m/14": SO400M_14}

# Released models: family -> {size: llm variant}, and the resolutions each kind was published at.
_RELEASED_LLM = {
    "paligemma": {"3b": "gemma_2b"},
    "paligemma2": {"3b": "gemma2_2b", "10b": "gemma2_9b", "28b": "gemma2_27b"},
}
_RELEASED_RES = {"pt": (224, 448, 896), "mix": (224, 448)}
_FT_NAME = re.compile(r"^(?P<family>paligemma2?)-(?P<size>\d+b)-ft-(?P<task>.+)-(?P<res>\d+)$")
_FT_RES = (224, 448, 896)

# Small configurations. tiny-*: exactly ../shared/fixtures/bigvision (56px images, vocab 300).
_TINY_IMG = dict(variant="So400m/14", width=32, depth=2, mlp_dim=128, num_heads=2, patch_size=14, image_size=56)
_TINY_LLM = dict(vocab_size=300, width=64, depth=2, mlp_dim=128, num_heads=4, head_dim=16)
SMALL_CONFIGS = {
    "tiny-v1": {"llm": dict(variant="gemma_2b", **_TINY_LLM, num_kv_heads=1), "img": _TINY_IMG},
    "tiny-mha": {"llm": dict(variant="gemma_2b", **_TINY_LLM, num_kv_heads=4), "img": _TINY_IMG},
    "tiny-v2": {"llm": dict(variant="gemma2_2b", **_TINY_LLM, num_kv_heads=2), "img": _TINY_IMG},
    # Gemma-2 style with the small tokenizer's vocab: benchmarks and export tests.
    "small-v2": {
        "llm": dict(variant="gemma2_2b", vocab_size=2048, width=256, depth=4, mlp_dim=1024, num_heads=4,
                    num_kv_heads=2, head_dim=64),
        "img": dict(variant="So400m/14", width=128, depth=4, mlp_dim=512, num_heads=4, patch_size=14,
                    image_size=112),
    },
    # The offline demo (`python -m pipelines.local`): learns the synthetic detection task in ~5 minutes on 2
    # CPU cores. Narrower than small-v2 (4x fewer FLOPs per token) and 36 image tokens instead of 64: on this
    # task a random-init model learns about as much per example at this size, so more examples per minute win.
    "demo-v2": {
        "llm": dict(variant="gemma2_2b", vocab_size=2048, width=128, depth=4, mlp_dim=512, num_heads=4,
                    num_kv_heads=2, head_dim=32),
        "img": dict(variant="So400m/14", width=128, depth=4, mlp_dim=512, num_heads=4, patch_size=14,
                    image_size=84),
    },
}


def released_names() -> list[str]:
  """Every released pt/mix model name (fine-tuned `...-ft-TASK-RES` names are accepted too)."""
  return [f"{family}-{size}-{kind}-{res}"
          for family, sizes in _RELEASED_LLM.items() for size in sizes
          for kind, resolutions in _RELEASED_RES.items() for res in resolutions]


def _released(family: str, size: str, res: int) -> dict:
  return {"llm": {"variant": _RELEASED_LLM[family][size], "vocab_size": PALIGEMMA_VOCAB},
          "img": {"variant": "So400m/14", "image_size": res}}


def model_config(name: str) -> dict:
  """Returns a fresh `model_cfg` for a released model name or a small config (`tiny-v1`, `small-v2`, ...)."""
  if name in SMALL_CONFIGS:
    cfg = SMALL_CONFIGS[name]
    return {"llm": dict(cfg["llm"]), "img": dict(cfg["img"])}
  if name in released_names():
    family, size, _, res = name.split("-")
    return _released(family, size, int(res))
  if (m := _FT_NAME.match(name)) and m["size"] in _RELEASED_LLM[m["family"]] and int(m["res"]) in _FT_RES:
    return _released(m["family"], m["size"], int(m["res"]))
  known = ", ".join(released_names() + list(SMALL_CONFIGS))
  raise ValueError(f"Unknown PaliGemma model name {name!r}. Known names: {known}; and fine-tuned releases "
                   f"named paligemma[2]-SIZE-ft-TASK-RES (SIZE 3b for paligemma, 3b/10b/28b for paligemma2; "
                   f"RES 224/448/896).")


def _resolve(cfg: dict, variants: dict, tower: str) -> dict:
  cfg = dict(cfg or {})
  variant = cfg.pop("variant", None)
  if variant not in variants:
    raise ValueError(f"model_cfg[{tower!r}]['variant'] is {variant!r}; expected one of {sorted(variants)}.")
  base = variants[variant]
  unknown = sorted(set(cfg) - set(base))
  if unknown:
    raise ValueError(f"model_cfg[{tower!r}] has unknown keys {unknown}; allowed: variant, {', '.join(sorted(base))}.")
  cfg = {"variant": variant, **base, **cfg}
  if cfg["remat_policy"] != "none" and not hasattr(jax.checkpoint_policies, cfg["remat_policy"]):
    raise ValueError(f"{tower}.remat_policy={cfg['remat_policy']!r} is neither 'none' nor a jax.checkpoint_policies "
                     "name (e.g. 'nothing_saveable', 'dots_saveable').")
  if cfg["attention"] not in attention.IMPLEMENTATIONS:
    raise ValueError(f"{tower}.attention={cfg['attention']!r}; expected one of {attention.IMPLEMENTATIONS}.")
  return cfg


def resolve_llm(llm_cfg: dict) -> dict:
  """The llm config with every field explicit (variant defaults, then overrides)."""
  return _resolve(llm_cfg, LLM_VARIANTS, "llm")


def resolve_img(img_cfg: dict) -> dict:
  """The image tower config with every field explicit; checks the image splits into whole patches."""
  cfg = _resolve(img_cfg, IMG_VARIANTS, "img")
  if cfg["image_size"] % cfg["patch_size"]:
    raise ValueError(f"img.image_size {cfg['image_size']} is not a multiple of img.patch_size {cfg['patch_size']}.")
  return cfg


def choose_attention(model_cfg: dict, platform: str, device_kind: str = "") -> dict:
  """`model_cfg` with each tower's `attention` chosen for `platform` ("cpu", "gpu", "tpu") where it is
  "auto" (attention.choose); explicit choices are kept (and checked against the model)."""
  out = {}
  for tower, resolve in (("llm", resolve_llm), ("img", resolve_img)):
    cfg = resolve(model_cfg.get(tower, {}))
    head_dim = cfg["head_dim"] if tower == "llm" else cfg["width"] // cfg["num_heads"]
    softcap = cfg.get("attn_logits_softcap", 0.0)
    chosen = attention.choose(cfg["attention"], platform=platform, tower=tower, dtype=cfg["dtype"], softcap=softcap,
                              head_dim=head_dim, device_kind=device_kind)
    out[tower] = {**model_cfg.get(tower, {}), "attention": chosen}
  return out


def image_size(model_cfg: dict) -> int:
  """Square input resolution in pixels that `model_cfg` expects."""
  return int(resolve_img(model_cfg.get("img", {}))["image_size"])


def num_image_tokens(model_cfg: dict) -> int:
  cfg = resolve_img(model_cfg.get("img", {}))
  return (cfg["image_size"] // cfg["patch_size"]) ** 2
