"""The finetune config: one locked `ml_collections.ConfigDict`, built by a Python config file.

A config file defines `get_config(arg=None)` (big_vision style) and usually starts from `defaults()`
below, which is the one place every key is declared. The config is locked before command-line overrides
are applied, so `--config.lrr=1` fails with the list of real keys instead of being silently ignored.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import os

import ml_collections

# `trainable` presets: which parameters get gradients (full-match regexes over `/`-joined paths).
TRAINABLE_PRESETS = {
    "attention": ("llm/layers/attn/.*",),  # the official 16 GB notebook recipe
    "llm": ("llm/.*",),
    "full": (".*",),
    "freeze-img": ("llm/.*",),  # same set as `llm`; the name big_vision transfer configs use
    "none": (),  # with LoRA: only the adapters train
}
OPTIMIZERS = ("sgd", "adam", "adamw", "adafactor")


def defaults() -> ml_collections.ConfigDict:
  """Every key the trainer reads, with its default. Config files override what they need."""
  c = ml_collections.ConfigDict()

  # Data: a dataset directory written by components.convert (local or gs://).
  c.data_dir = ""
  c.train_split = "train"
  c.valid_split = "valid"  # "" disables validation
  c.text_len = 64  # tokens of prefix + separator + suffix, before the shift (big_vision's text_len)
  c.batch_size = 32  # global batch, across all hosts and devices
  c.total_steps = 0  # > 0 wins over epochs
  c.epochs = 1.0
  c.shuffle_buffer_seed = 0  # folded with `seed`; the order is part of the checkpoint
  c.data_threads = 8  # parallel decode threads per host

  # Model: a released name or test config (components.paligemma.configs), plus overrides.
  c.model_name = "paligemma2-3b-pt-224"
  c.model_overrides = ml_collections.ConfigDict({"llm": {}, "img": {}})
  c.checkpoint = ""  # .npz (model.json/tokenizer.model beside it) or a model directory; "" = random init
  c.tokenizer = ""  # default: tokenizer.model beside the checkpoint

  # What trains: a preset name (see TRAINABLE_PRESETS) or regexes joined by ",".
  c.trainable = "attention"
  c.lora = ml_collections.ConfigDict()
  c.lora.rank = 0  # 0 = no adapters
  c.lora.alpha = 16.0  # the update is scaled by alpha / rank
  c.lora.targets = "llm/layers/attn/.*,llm/layers/mlp/.*"

  # Optimizer (big_vision's recipe for adam/adamw: clip, then adam, x lr, + decoupled wd, x schedule).
  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adamw"  # one of OPTIMIZERS
  c.optimizer.lr = 1e-5
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.momentum = 0.0  # sgd only
  c.optimizer.wd = 0.0  # decoupled: update -= schedule * wd * param, only on `wd_regex`
  c.optimizer.wd_regex = ".*/kernel$"
  c.optimizer.grad_clip_norm = 1.0  # 0 = no clipping
  c.optimizer.schedule = "cosine"  # cosine | linear | constant (all with warm-up)
  c.optimizer.warmup_percent = 0.05  # the first step has multiplier 0 whenever this is > 0
  c.label_smoothing = 0.0
  c.llm_dropout = 0.0
  c.grad_accum_steps = 1  # micro-batches per step; batch_size must divide by it ("auto" remat may raise it)

  # Precision and memory.
  c.frozen_dtype = "bfloat16"  # or float16 / float32; trainable weights and optimizer state stay f32
  c.compute_dtype = "bfloat16"  # the matmul dtype of both towers (float32: exact, slower); f32 softmax/norms/loss
  c.remat_policy = "auto"  # both towers: "auto" (autotune.py), "none" or a jax.checkpoint_policies name
  c.memory_limit_gib = 0.0  # "auto" fits the step in this much per device; 0 = the device's own limit

  # Sharding: mesh axis sizes (-1 = all remaining devices). Batch is split over both axes; params
  # over `fsdp` by big_vision's rule (leaves over 4 MiB on their largest divisible dimension).
  c.mesh = ml_collections.ConfigDict({"data": 1, "fsdp": -1})
  c.fsdp_min_bytes = 4 * 2**20

  # Bookkeeping.
  c.seed = 0
  c.log_every = 10
  c.eval_every = 0  # 0 = only at the end (if there is a valid split)
  c.eval_batches = 0  # 0 = the whole valid split
  c.checkpoint_every = 100
  c.keep_checkpoints = 2  # the last K, plus the best by validation loss
  c.async_checkpoints = True
  return c


def load_config(path: str, overrides: list[str] | tuple[str, ...] = (), arg: str | None = None
               ) -> ml_collections.ConfigDict:
  """Runs `get_config(arg)` from a config file, locks it, applies `key=value` overrides."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file {path} not found; pick one in components/finetune/configs/")
  spec = importlib.util.spec_from_file_location(f"_finetune_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"config file {path} defines no get_config()")
  config = module.get_config(arg) if arg is not None else module.get_config()
  config.lock()
  for override in overrides:
    apply_override(config, override)
  validate(config)
  return config


def apply_override(config: ml_collections.ConfigDict, override: str) -> None:
  """`key.sub=value`; the value is parsed to the type of the current value."""
  key, sep, text = override.partition("=")
  if not sep:
    raise ValueError(f"config override {override!r} is not key=value")
  *parents, leaf = key.split(".")
  node = config
  for name in parents:
    node = getattr(node, name)  # locked ConfigDict: an unknown key raises, naming the real ones
  current = getattr(node, leaf)
  setattr(node, leaf, _parse_like(text, current))


def _parse_like(text: str, current):
  if isinstance(current, str):
    return text
  if isinstance(current, bool):
    if text.lower() not in ("true", "false", "1", "0"):
      raise ValueError(f"expected true/false, got {text!r}")
    return text.lower() in ("true", "1")
  if isinstance(current, (int, float)) and not isinstance(current, bool):
    value = ast.literal_eval(text)
    return type(current)(value) if isinstance(current, float) else value
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def validate(config: ml_collections.ConfigDict) -> None:
  """Catches what would otherwise fail deep inside a compiled step."""
  if config.optimizer.name not in OPTIMIZERS:
    raise ValueError(f"config.optimizer.name={config.optimizer.name!r}; choose one of {OPTIMIZERS}")
  if config.batch_size % config.grad_accum_steps:
    raise ValueError(f"batch_size {config.batch_size} is not divisible by grad_accum_steps "
                     f"{config.grad_accum_steps}")
  if config.frozen_dtype not in ("bfloat16", "float16", "float32"):
    raise ValueError(f"config.frozen_dtype={config.frozen_dtype!r}; use bfloat16, float16 or float32")
  if config.compute_dtype not in ("bfloat16", "float16", "float32"):
    raise ValueError(f"config.compute_dtype={config.compute_dtype!r}; use bfloat16, float16 or float32 (the matmul "
                     "dtype of both towers)")
  for key in ("dtype", "remat_policy"):
    own = "compute_dtype" if key == "dtype" else "remat_policy"
    for tower in ("llm", "img"):
      if key in config.model_overrides[tower]:
        raise ValueError(f"config.model_overrides.{tower}.{key} and config.{own} both set the {tower} tower's "
                         f"{key}; set only config.{own} (it applies to both towers)")
  if config.memory_limit_gib < 0:
    raise ValueError(f"config.memory_limit_gib={config.memory_limit_gib}; use 0 (the device's own limit) or a "
                     "positive number of GiB")
  if config.total_steps <= 0 and config.epochs <= 0:
    raise ValueError("set config.total_steps or config.epochs to a positive number")


def trainable_regexes(spec) -> tuple[str, ...]:
  """`trainable` (a preset name, regexes joined by ",", or a sequence) -> full-match regexes."""
  if isinstance(spec, (list, tuple)):
    return tuple(spec)
  if spec in TRAINABLE_PRESETS:
    return TRAINABLE_PRESETS[spec]
  return tuple(r.strip() for r in spec.split(",") if r.strip())


def to_json(config: ml_collections.ConfigDict) -> str:
  return json.dumps(json.loads(config.to_json()), indent=2, sort_keys=True)
