"""What a KFP task of the finetune step runs: the core called with the component's plain parameters.

Kept apart from component.py, which builds the component with `kfp.dsl` at import: KFP's executor
imports a reduced `kfp.dsl` without `component`, so the component body must not import that module.
"""
import os

CONFIGS_DIR = os.path.join(os.path.dirname(__file__), "configs")
# The component's named settings and the config keys they set; 0 / "" leave the config file's value.
SETTINGS = (("trainable", "trainable"), ("total_steps", "total_steps"), ("epochs", "epochs"),
            ("batch_size", "batch_size"), ("lr", "optimizer.lr"), ("text_len", "text_len"))


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


def checkpoint_model_name(checkpoint: str) -> str:
  """The `name` in the model.json of a checkpoint's model directory (ARCHITECTURE.md), "" when it has none."""
  from components.finetune import workdir

  directory = os.path.dirname(checkpoint) if checkpoint.endswith(".npz") else checkpoint
  model_json = workdir.read_json(os.path.join(directory, "model.json")) if checkpoint else None
  return (model_json or {}).get("name", "")


def overrides_for(data_dir: str, checkpoint: str = "", overrides=(), **settings) -> list[str]:
  """The `key=value` config overrides of a run, in the order they apply (a later one wins): the data, the
  checkpoint and its model's name, the named SETTINGS that are set, then the free-form `overrides`."""
  result = [f"data_dir={data_dir}"]
  if checkpoint:
    result.append(f"checkpoint={checkpoint}")
  if model_name := checkpoint_model_name(checkpoint):
    result.append(f"model_name={model_name}")  # the tuned workdir's model.json names the model it came from
  unknown = set(settings) - {name for name, _ in SETTINGS}
  if unknown:
    raise TypeError(f"unknown finetune settings {sorted(unknown)}; known: {[name for name, _ in SETTINGS]}")
  result += [f"{key}={settings[name]}" for name, key in SETTINGS if settings.get(name)]
  return result + list(overrides)


def run_finetune(config: str, workdir: str, data_dir: str, checkpoint: str = "", overrides: tuple = (),
                 **settings) -> dict:
  """Loads a shipped config (by name) or a config file, applies `overrides_for(...)`, trains. Returns the
  trainer's result (`step`, `loss`, `val_loss`, `status`) plus the `model_name` it trained."""
  import logging

  from components.finetune import preemption

  preemption.exit_on_sigterm()  # before the heavy imports: a SIGTERM during start-up exits 143 with one line
  from components.finetune import config as config_lib, distributed, trainer

  # As the CLI: the trainer's progress lines at INFO, orbax's per-save chatter (through absl) only from WARNING.
  logging.getLogger("absl").setLevel(logging.WARNING)
  loaded = config_lib.load_config(config_path(config), overrides_for(data_dir, checkpoint, overrides, **settings))
  distributed.initialize()
  return {**trainer.train(loaded, workdir), "model_name": loaded.model_name}
