"""The finetune config: one locked `ml_collections.ConfigDict`, built once at the entry point.

    config file (`get_config(arg)`, usually starting from `defaults()`)
      -> the values one caller sets: the CLI's `--config.KEY=VALUE` flags, or the KFP component's typed
         parameters plus its `KEY=VALUE` overrides (`Setting`s)
      -> validated, locked config (`load_config`)

`defaults()` is the one place every key is declared (it comes back locked, so a typo in a config file
fails too). A caller's value replaces the file's; a key the caller sets twice is an error naming both
sources (MaxText's rule), never a silent win. Typed values (the component's `lr: float`) are assigned as
they are; text (`--config.optimizer.lr=1e-4`, an override string) is parsed by the key's declared type,
with the parsers `ml_collections.config_flags` uses. `total_steps` and `epochs` say the same thing two
ways: a config file sets one of them, and a caller giving one replaces the other.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import json
import os
import re
import traceback
from typing import Any, Sequence

import ml_collections
from absl import flags
from ml_collections.config_flags import tuple_parser

from components.common.policy import TRAINABLE_PRESETS, trainable_regexes  # noqa: F401 (part of this API)
from components.paligemma import configs as model_configs

OPTIMIZERS = ("sgd", "adam", "adamw", "adafactor")
# Keys that say the same thing: a source sets at most one; a caller's one replaces the file's other.
EXCLUSIVE = (("total_steps", "epochs"),)
# Tower fields the trainer sets itself, and why: not in `model_overrides`, so no key is set in two places.
TRAINER_OWNED = {
    "llm": {"remat_policy": "set config.remat_policy (both towers)",
            "dtype": "set config.compute_dtype (the matmul dtype of both towers)",
            "final_logits_softcap": "the trainer turns the final logits soft-cap off for transfer"},
    "img": {"remat_policy": "set config.remat_policy (both towers)",
            "dtype": "set config.compute_dtype (the matmul dtype of both towers)"},
}
_PARSERS = {bool: flags.BooleanParser(), int: flags.IntegerParser(), float: flags.FloatParser(),
            str: flags.ArgumentParser(), tuple: tuple_parser.TupleParser()}


class ConfigError(ValueError):
  """A config that cannot run: a bad file, an unknown key, a bad value, a key set twice. `source` names where
  the offending value came from (a flag, a component parameter, a config file), for the caller's message."""

  def __init__(self, message: str, source: str | None = None):
    super().__init__(message)
    self.source = source


@dataclasses.dataclass(frozen=True)
class Setting:
  """One value a caller sets: `key` is dotted (`optimizer.lr`); `value` is typed, or, with `is_text`, the text a
  user typed, parsed by the key's declared type; `source` says where it came from (`--config.optimizer.lr`)."""
  key: str
  value: Any
  source: str
  is_text: bool = False


def _tower_overrides(tower: str, variants: dict) -> ml_collections.ConfigDict:
  """Every field of a tower's variants as a typed, unset (None) placeholder: what `model_overrides` accepts."""
  fields = {"variant": ""}
  for variant in variants.values():
    fields.update(variant)
  return ml_collections.ConfigDict({
      name: ml_collections.config_dict.placeholder(type(value))
      for name, value in sorted(fields.items()) if name not in TRAINER_OWNED[tower]})


def defaults() -> ml_collections.ConfigDict:
  """Every key the trainer reads, with its default (locked: config files set these, they add none)."""
  c = ml_collections.ConfigDict()

  # Data: a dataset directory written by components.convert (local or gs://).
  c.data_dir = ""
  c.train_split = "train"
  c.valid_split = "valid"  # "" disables validation
  c.text_len = 64  # tokens of prefix + separator + suffix, before the shift (big_vision's text_len); 0: from the data
  c.batch_size = 32  # global batch, across all hosts and devices
  # How long: set exactly one (EXCLUSIVE). epochs -> steps = epochs * train examples // batch_size.
  c.total_steps = ml_collections.config_dict.placeholder(int)
  c.epochs = ml_collections.config_dict.placeholder(float)
  c.shuffle_buffer_seed = 0  # folded with `seed`; the order is part of the checkpoint
  c.data_threads = 8  # parallel decode threads per host

  # Model: a released name or test config (components.paligemma.configs), built when there is no
  # checkpoint; a checkpoint's model.json says which model it holds. Tower fields set here (None = the
  # model's own value) apply either way, e.g. model_overrides.llm.dropout.
  c.model_name = "paligemma2-3b-pt-224"
  c.model_overrides = ml_collections.ConfigDict({
      "llm": _tower_overrides("llm", model_configs.LLM_VARIANTS),
      "img": _tower_overrides("img", model_configs.IMG_VARIANTS)})
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
  c.lock()
  return c


# ------------------------------------------------------------------------------------------ the caller's values

def parse_assignment(text: str, source: str | None = None) -> Setting:
  """`KEY=VALUE` as a user typed it (a component override, `pipelines.local --set`) -> a text `Setting`."""
  key, sep, value = text.partition("=")
  source = source or repr(text)
  if not sep or not key.strip():
    raise ConfigError(f"{source}: {text!r} is not KEY=VALUE (e.g. optimizer.lr=1e-4)", source)
  return Setting(key.strip(), value, source, is_text=True)


def flag_settings(args: Sequence[str]) -> list[Setting]:
  """`--config.KEY=VALUE` command-line flags -> text `Setting`s (anything else is a ConfigError)."""
  settings = []
  for arg in args:
    name, sep, value = arg.partition("=")
    if not name.startswith("--config.") or not sep:
      raise ConfigError(f"{arg!r}: config keys are set as --config.KEY=VALUE", arg)
    settings.append(Setting(name[len("--config."):], value, arg, is_text=True))
  return settings


def _keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Every settable (leaf) key, dotted."""
  out = []
  for name in config.keys():
    value = config[name]
    if isinstance(value, ml_collections.ConfigDict):
      out += _keys(value, f"{prefix}{name}.")
    else:
      out.append(f"{prefix}{name}")
  return out


def _unknown_key(key: str, keys: list[str], source: str) -> ConfigError:
  _, tower, field = (key.split(".") + ["", ""])[:3]
  if key.startswith("model_overrides.") and field in TRAINER_OWNED.get(tower, {}):
    return ConfigError(f"{source}: {key!r} is not settable: {TRAINER_OWNED[tower][field]}", source)
  leaves = {}
  for k in keys:
    leaves.setdefault(k.rsplit(".", 1)[-1], []).append(k)
  close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
  close += [k for leaf in difflib.get_close_matches(key.rsplit(".", 1)[-1], list(leaves), n=3, cutoff=0.6)
            for k in leaves[leaf] if k not in close]
  hint = f"did you mean {' or '.join(repr(k) for k in close[:3])}? " if close else ""
  return ConfigError(f"{source}: unknown config key {key!r} ({hint}every key is declared in "
                     "components/finetune/config.py defaults())", source)


def _node(config: ml_collections.ConfigDict, key: str):
  *parents, leaf = key.split(".")
  node = config
  for name in parents:
    node = node[name]
  return node, leaf


def _value(config: ml_collections.ConfigDict, setting: Setting):
  """The setting's value, of the key's declared type (text parsed; typed values kept as they are)."""
  node, leaf = _node(config, setting.key)
  declared = node.get_type(leaf)
  if not setting.is_text:
    return setting.value
  if declared not in _PARSERS:
    raise ConfigError(f"{setting.source}: config key {setting.key!r} ({declared.__name__}) cannot be set from "
                      "text; set it in the config file", setting.source)
  try:
    return _PARSERS[declared].parse(setting.value)
  except (ValueError, TypeError, SyntaxError) as e:
    raise ConfigError(f"{setting.source}: {setting.value!r} is not a valid {declared.__name__} for config key "
                      f"{setting.key!r} ({e})", setting.source) from None


def apply_settings(config: ml_collections.ConfigDict, settings: Sequence[Setting]) -> None:
  """Sets one caller's values on a locked config (see the module note); checks first, then assigns."""
  keys = _keys(config)
  first: dict[str, Setting] = {}
  for s in settings:
    if s.key not in keys:
      group = [k for k in keys if k.startswith(s.key + ".")]
      if group:
        raise ConfigError(f"{s.source}: {s.key!r} is a group of keys; set them one by one "
                          f"({', '.join(group)})", s.source)
      raise _unknown_key(s.key, keys, s.source)
    if s.key in first:
      raise ConfigError(f"config key {s.key!r} is set twice: by {first[s.key].source} and by {s.source}; "
                        "give it once", s.source)
    first[s.key] = s
  for group in EXCLUSIVE:
    given = [first[k] for k in group if k in first]
    if len(given) > 1:
      raise ConfigError(f"config keys {' and '.join(repr(s.key) for s in given)} are exclusive, but both are "
                        f"set ({' and '.join(s.source for s in given)}); give one", given[-1].source)
  values = {s.key: _value(config, s) for s in settings}
  for group in EXCLUSIVE:  # the caller's choice replaces the file's other way of saying it
    values.update({other: None for key in group if key in first for other in group if other != key})
  for key, value in values.items():
    try:
      config.update_from_flattened_dict({key: value})
    except TypeError:  # a typed value of the wrong type (text was parsed to the declared one)
      node, leaf = _node(config, key)
      raise ConfigError(f"{first[key].source}: config key {key!r} takes a {node.get_type(leaf).__name__}, not "
                        f"{value!r}", first[key].source) from None


# --------------------------------------------------------------------------------------------- the file

def _config_file_error(path: str, error: Exception) -> ConfigError:
  """One line naming the config file's line: ml_collections' own message lists every field's repr."""
  lines = [f.lineno for f in traceback.extract_tb(error.__traceback__) if os.path.samefile(f.filename, path)]
  where = f"{path}, line {lines[-1]}" if lines else path
  unknown = re.match(r"""['"]?Key "(\w+)" does not exist""", str(error))
  owned = {field: reason for tower in TRAINER_OWNED.values() for field, reason in tower.items()}
  if unknown and unknown[1] in owned:
    return ConfigError(f"config file {where}: {unknown[1]!r} is not settable: {owned[unknown[1]]}", path)
  if unknown:
    leaves = sorted({k.rsplit(".", 1)[-1] for k in _keys(defaults())})
    close = difflib.get_close_matches(unknown[1], leaves, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(k) for k in close)}? " if close else ""
    return ConfigError(f"config file {where}: unknown config key {unknown[1]!r} ({hint}every key is declared in "
                       "components/finetune/config.py defaults())", path)
  return ConfigError(f"config file {where}: {error}", path)


def _run_config_file(path: str, arg: str | None) -> ml_collections.ConfigDict:
  if not os.path.isfile(path):
    raise ConfigError(f"config file {path} not found; pick one in components/finetune/configs/", path)
  spec = importlib.util.spec_from_file_location(f"_finetune_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config file {path} defines no get_config()", path)
  try:
    config = module.get_config(arg) if arg is not None else module.get_config()
  except (AttributeError, KeyError, TypeError) as e:  # a key defaults() does not declare, a value of the wrong type
    raise _config_file_error(path, e) from None
  missing = sorted(set(_keys(defaults())) - set(_keys(config)))
  if missing:
    raise ConfigError(f"config file {path} lacks keys {missing}; start get_config() from defaults()", path)
  for group in EXCLUSIVE:
    both = [k for k in group if config[k] is not None]
    if len(both) > 1:
      raise ConfigError(f"config file {path} sets both {' and '.join(f'{k} ({config[k]})' for k in both)}; "
                        "they are exclusive: keep one", path)
  return config


def load_config(path: str, settings: Sequence[Setting | str] = (), arg: str | None = None
                ) -> ml_collections.ConfigDict:
  """The config file's `get_config(arg)`, then one caller's `settings` (`Setting`s, or `KEY=VALUE` texts),
  validated and locked. Trains nothing: call it to check a run before starting it. Raises ConfigError."""
  config = _run_config_file(path, arg)
  config.lock()
  apply_settings(config, [parse_assignment(s) if isinstance(s, str) else s for s in settings])
  validate(config)
  return config


def validate(config: ml_collections.ConfigDict) -> None:
  """Catches what would otherwise fail deep inside a compiled step."""
  if config.optimizer.name not in OPTIMIZERS:
    raise ConfigError(f"config.optimizer.name={config.optimizer.name!r}; choose one of {OPTIMIZERS}")
  if config.batch_size % config.grad_accum_steps:
    raise ConfigError(f"batch_size {config.batch_size} is not divisible by grad_accum_steps "
                      f"{config.grad_accum_steps}")
  if config.frozen_dtype not in ("bfloat16", "float16", "float32"):
    raise ConfigError(f"config.frozen_dtype={config.frozen_dtype!r}; use bfloat16, float16 or float32")
  if config.compute_dtype not in ("bfloat16", "float16", "float32"):
    raise ConfigError(f"config.compute_dtype={config.compute_dtype!r}; use bfloat16, float16 or float32 (the "
                      "matmul dtype of both towers)")
  if config.memory_limit_gib < 0:
    raise ConfigError(f"config.memory_limit_gib={config.memory_limit_gib}; use 0 (the device's own limit) or a "
                      "positive number of GiB")
  if config.text_len < 0:
    raise ConfigError(f"config.text_len={config.text_len}; use a positive number of tokens, or 0 to size it from "
                      "the training data (the longest example)")
  if config.total_steps is None and config.epochs is None:
    raise ConfigError("set config.total_steps or config.epochs")
  if (config.total_steps is not None and config.total_steps <= 0) or (config.epochs is not None and
                                                                       config.epochs <= 0):
    raise ConfigError(f"config.total_steps={config.total_steps}, config.epochs={config.epochs}: the one set must "
                      "be positive")
  if config.keep_checkpoints < 2:
    raise ConfigError(f"config.keep_checkpoints={config.keep_checkpoints}: keep at least 2, so that a damaged latest "
                      "checkpoint has a verified older one to fall back to")


def model_overrides(config, tower: str) -> dict:
  """The tower fields `config.model_overrides` sets (None = unset, left out)."""
  return {k: v for k, v in dict(config.model_overrides[tower]).items() if v is not None}


def to_json(config: ml_collections.ConfigDict) -> str:
  return json.dumps(json.loads(config.to_json()), indent=2, sort_keys=True)
