"""What a KFP task of the finetune step runs: the core called with the component's plain parameters.

Kept apart from component.py, which builds the component with `kfp.dsl` at import: KFP's executor
imports a reduced `kfp.dsl` without `component`, so the component body must not import that module.

The component's typed parameters reach the config as they are (`lr: float` is the very float the
optimizer gets), None meaning "not set"; its free-form `overrides` ("KEY=VALUE" texts) are parsed by each
key's declared type. Both are one caller's settings (components/finetune/config.py): a key given twice,
say `lr` and `optimizer.lr=...`, is an error naming both.
"""
import os

CONFIGS_DIR = os.path.join(os.path.dirname(__file__), "configs")
# The component's named parameters and the config keys they set.
SETTINGS = {"trainable": "trainable", "total_steps": "total_steps", "epochs": "epochs", "batch_size": "batch_size",
            "lr": "optimizer.lr", "text_len": "text_len", "seed": "seed"}


def config_path(config: str) -> str:
  """A shipped config's name (`notebook_attention_sgd`) or a path to a config file."""
  if config.endswith(".py"):
    return config
  path = os.path.join(CONFIGS_DIR, f"{config}.py")
  if not os.path.exists(path):
    shipped = sorted(n.removesuffix(".py") for n in os.listdir(CONFIGS_DIR) if n.endswith(".py"))
    raise FileNotFoundError(f"no finetune config named {config!r}; shipped configs: {shipped}, or give a "
                            "path ending in .py")
  return path


def settings_for(data_dir: str | None = None, checkpoint: str | None = None, overrides=(), flag_names=None,
                 **named) -> list:
  """The config `Setting`s of a run: the data and base model the pipeline hands over, the named SETTINGS that
  are not None, then the free-form `overrides`. `flag_names` maps a named setting or "overrides" to the flag a
  CLI took it from (`{"batch_size": "--batch", "overrides": "--set"}`), so errors name what the user typed."""
  from components.finetune.config import Setting, parse_assignment

  unknown = set(named) - set(SETTINGS)
  if unknown:
    raise TypeError(f"unknown finetune settings {sorted(unknown)}; known: {list(SETTINGS)}")
  settings = []
  if data_dir:
    settings.append(Setting("data_dir", data_dir, "the dataset input"))
  if checkpoint:
    settings.append(Setting("checkpoint", checkpoint, "the base_model input"))
  flag_names = flag_names or {}
  settings += [Setting(key, named[name], _flag_source(flag_names[name], named[name]) if name in flag_names
                       else f"parameter {name}") for name, key in SETTINGS.items() if named.get(name) is not None]
  return settings + [parse_assignment(text, _flag_source(flag_names["overrides"], text) if "overrides" in flag_names
                                      else f"override {text!r}") for text in overrides]


def _flag_source(flag: str, value) -> str:
  """How a user typed it: `--batch 64`, or with a flag ending in "=", `--param batch_size=64`."""
  return f"{flag}{value}" if flag.endswith("=") else f"{flag} {value}"


def too_few_examples(error, settings, config: str):
  """A config.ConfigError for data.TooFewExamples, naming where the batch size came from (a flag, a component
  parameter, the config file)."""
  from components.finetune.config import ConfigError

  source = next((s.source for s in settings if s.key == "batch_size"), f"batch_size in {config}")
  return ConfigError(f"{source}: the batch size ({error.batch_size}) is larger than the {error.count} examples "
                     f"of split {error.split!r} of {error.data_dir}; lower it (or add examples)", source)


def resolve_config(config: str, data_dir: str | None = None, checkpoint: str | None = None, overrides=(),
                   flag_names=None, **named):
  """The locked config a run with these parameters trains with; trains nothing, so a caller (pipelines.local,
  pipelines.submit) can check its parameters before anything runs. Raises config.ConfigError (a ValueError)."""
  from components.finetune import config as config_lib

  return config_lib.load_config(config_path(config),
                                settings_for(data_dir, checkpoint, overrides, flag_names, **named))


def run_finetune(config: str, workdir: str, data_dir: str, checkpoint: str = "", overrides: tuple = (),
                 **named) -> dict:
  """Trains with `resolve_config(...)`. Returns the trainer's result (`step`, `loss`, `val_loss`, `status`,
  `model_name`: the model it trained, from the base model's model.json)."""
  import logging

  from components.finetune import preemption

  preemption.exit_on_sigterm()  # before the heavy imports: a SIGTERM during start-up exits 143 with one line
  from components.finetune import config as config_lib, data, distributed, trainer

  # As the CLI: the trainer's progress lines at INFO, orbax's per-save chatter (through absl) only from WARNING.
  logging.getLogger("absl").setLevel(logging.WARNING)
  settings = settings_for(data_dir, checkpoint, overrides, **named)
  resolved = config_lib.load_config(config_path(config), settings)
  distributed.initialize()
  try:
    return trainer.train(resolved, workdir)
  except data.TooFewExamples as e:
    raise too_few_examples(e, settings, config) from None
