"""What a KFP task of the finetune step runs: the core called with the component's plain parameters.

Kept apart from component.py, which builds the component with `kfp.dsl` at import: KFP's executor
imports a reduced `kfp.dsl` without `component`, so the component body must not import that module.
"""

def run_finetune(config: str, workdir: str, data_dir: str, checkpoint: str = "", overrides: tuple = ()) -> dict:
  """Loads a shipped config (by name) or a config file, applies overrides, trains. Returns the result."""
  import os

  from components.finetune import config as config_lib, distributed, trainer

  if not config.endswith(".py"):
    config = os.path.join(os.path.dirname(__file__), "configs", f"{config}.py")
  settings = [f"data_dir={data_dir}"] + ([f"checkpoint={checkpoint}"] if checkpoint else []) + list(overrides)
  distributed.initialize()
  return trainer.train(config_lib.load_config(config, settings), workdir)
