"""Named PaliGemma configurations: model variants, released models and small test models.

A `model_cfg` is a plain JSON-serialisable dict `{"llm": {...}, "img": {...}}`, big_vision style: each
tower names a `variant` and may override any of its fields. `Model(**model_cfg)` builds it;
`resolve_llm`/`resolve_img` give every field explicitly (what the towers and converters read).

`infer_model_config(shapes)` goes the other way: the configuration of a big_vision `.npz` from its
array shapes alone (`checkpoint.read_shapes` reads them from the file headers).

Numbers: ../shared/reference/PALIGEMMA.md §2 (read from big_vision's gemma.py and vit.py).
"""
import logging
import re
from typing import Mapping, NamedTuple, Sequence

import jax

from components.paligemma import _hf_layout as layout

log = logging.getLogger(__name__)
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


# ------------------------------------------------------------------------------------ from array shapes
class InferredModel(NamedTuple):
  name: str  # a released or small config's name when the shapes (and file name) say which, else descriptive
  model_cfg: dict


_LLM_GEOMETRY = ("vocab_size", "width", "depth", "mlp_dim", "num_heads", "num_kv_heads", "head_dim", "post_norms")
_IMG_GEOMETRY = ("width", "depth", "mlp_dim", "num_heads", "patch_size", "image_size")
_RELEASE_FILE = re.compile(r"(\.(bf16|b16|f16))?\.npz$")  # paligemma2-3b-pt-224.b16.npz -> paligemma2-3b-pt-224


def infer_model_config(shapes: Mapping[str, Sequence[int]], file_name: str | None = None) -> InferredModel:
  """The configuration of a big_vision PaliGemma checkpoint from its array shapes (flat name -> shape).

  Gemma 1 or 2 from the norms present (Gemma 2 has post-attention/post-MLP norms); widths, depths, heads,
  kv heads, head dim, MLP dims and vocabulary from the weights; the patch size from the patch kernel; the
  image size from the position embedding (g*g tokens of a patch each). Every array must then have exactly
  the shape that configuration gives it. What shapes cannot show (Gemma 2's soft caps, the 27B query scale)
  comes from the released variant of the same geometry; a geometry no variant has gets its family's
  settings (Gemma 2: soft caps 50/30, queries scaled by head_dim**-0.5, as every released Gemma 2 but 27B),
  said in a warning. `file_name` (e.g. `paligemma2-3b-mix-448.b16.npz`) supplies the released name when
  the shapes are that model's. Raises ValueError when the arrays do not form a PaliGemma model.
  """
  shapes = {name: tuple(int(d) for d in shape) for name, shape in shapes.items()}
  dims = layout.dims_from_shapes(shapes)
  grid = round(dims.num_patches ** 0.5)
  if grid * grid != dims.num_patches:
    raise ValueError(f"img/pos_embedding holds {dims.num_patches} positions, not a square grid of patches")
  if dims.kv_heads < 1 or dims.heads % dims.kv_heads:
    raise ValueError(f"{dims.heads} query heads cannot share {dims.kv_heads} key/value heads")
  expected = layout.bv_shapes(dims)
  problems = ([f"missing array {n!r}" for n in sorted(set(expected) - set(shapes))]
              + [f"unexpected array {n!r}" for n in sorted(set(shapes) - set(expected))]
              + [f"array {n!r} has shape {shapes[n]}, expected {s} from the other arrays" for n, s in expected.items()
                 if n in shapes and shapes[n] != s])
  if problems:
    more = f" (and {len(problems) - 4} more)" if len(problems) > 4 else ""
    raise ValueError("the arrays do not form a PaliGemma model: " + "; ".join(problems[:4]) + more)

  llm = dict(zip(_LLM_GEOMETRY, (dims.vocab, dims.width, dims.depth, dims.mlp, dims.heads, dims.kv_heads,
                                 dims.head_dim, dims.post_norms)))
  img = dict(zip(_IMG_GEOMETRY, (dims.img_width, dims.img_depth, dims.img_mlp, dims.img_heads, dims.patch,
                                 grid * dims.patch)))
  for name in SMALL_CONFIGS:
    cfg = model_config(name)
    if _geometry(resolve_llm(cfg["llm"]), _LLM_GEOMETRY) == llm and _geometry(resolve_img(cfg["img"]), _IMG_GEOMETRY) == img:
      return InferredModel(name, cfg)

  variant = next((v for v, fields in LLM_VARIANTS.items() if _geometry(fields, _LLM_GEOMETRY[1:]) == {
      k: llm[k] for k in _LLM_GEOMETRY[1:]}), None)
  so400m = _geometry(SO400M_14, _IMG_GEOMETRY[:-1]) == {k: img[k] for k in _IMG_GEOMETRY[:-1]}
  released = next(((family, size) for family, sizes in _RELEASED_LLM.items() for size, v in sizes.items()
                   if v == variant), None)
  if released and so400m and llm["vocab_size"] == PALIGEMMA_VOCAB:
    family, size = released
    model_cfg = _released(family, size, img["image_size"])
    hinted = _release_name_of_file(file_name)
    name = hinted if hinted and model_config(hinted) == model_cfg else f"{family}-{size}-{img['image_size']}"
    return InferredModel(name, model_cfg)

  family = "paligemma2" if dims.post_norms else "paligemma"
  if variant is None:
    variant = "gemma2_2b" if dims.post_norms else "gemma_2b"
    if dims.post_norms:
      log.warning("%s: a Gemma 2 of a geometry no released model has; assuming the released Gemma 2 settings "
                  "(attention soft cap 50, final soft cap 30%s)", file_name or "checkpoint",
                  "" if dims.width == dims.heads * dims.head_dim
                  else ", queries scaled by head_dim**-0.5 rather than 27B's (width/heads)**-0.5")
  name = (f"{family}-custom-w{dims.width}-d{dims.depth}-v{dims.vocab}-img{dims.img_width}x{dims.img_depth}"
          f"-{img['image_size']}px")
  return InferredModel(name, {"llm": _with_variant(llm, LLM_VARIANTS[variant], variant),
                              "img": _with_variant(img, SO400M_14, "So400m/14")})


def _geometry(fields: Mapping, keys: Sequence[str]) -> dict:
  return {k: fields[k] for k in keys}


def _with_variant(fields: dict, base: dict, variant: str) -> dict:
  """`variant` plus overrides for the fields that differ from it."""
  return {"variant": variant, **{k: v for k, v in fields.items() if base[k] != v}}


def _release_name_of_file(file_name: str | None) -> str | None:
  """The released name a published checkpoint file is named after (`paligemma2-3b-pt-224.b16.npz`), if any."""
  if not file_name:
    return None
  stem = _RELEASE_FILE.sub("", file_name.replace("\\", "/").rsplit("/", 1)[-1])
  try:
    model_config(stem)
  except ValueError:
    return None
  return stem if stem not in SMALL_CONFIGS else None
