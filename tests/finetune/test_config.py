"""Configs: every shipped file builds (down to the abstract sharded train state); one caller's settings are
typed, set each key once, and `total_steps`/`epochs` replace each other; unknown keys fail in one line."""
import pathlib

import jax
import pytest

from components.common import sharding
from components.finetune import config as config_lib, params, state
from components.finetune.config import ConfigError, Setting, flag_settings, load_config

CONFIGS = sorted((pathlib.Path(__file__).resolve().parents[2] / "components/finetune/configs").glob("*.py"))
TINY = str(CONFIGS[0].parent / "tiny_test.py")  # sets total_steps = 20


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_config_builds(path):
  config = load_config(str(path))
  setup = state.build(config, sharding.make_mesh(config.mesh.data, config.mesh.fsdp), total_steps=10)
  n_trainable = sum(x.size for x in jax.tree.leaves(setup.abstract_state["train"]))
  n_all = sum(x.size for x in jax.tree.leaves(setup.abstract_full))
  assert 0 < n_trainable <= n_all


def test_flags_are_parsed_by_the_keys_declared_type():
  config = load_config(TINY, flag_settings([
      "--config.optimizer.lr=0.5", "--config.total_steps=7", "--config.trainable=llm", "--config.lora.rank=4",
      "--config.async_checkpoints=false", "--config.frozen_dtype=float32"]))
  assert config.optimizer.lr == 0.5 and type(config.optimizer.lr) is float
  assert config.total_steps == 7 and type(config.total_steps) is int
  assert (config.trainable, config.lora.rank, config.async_checkpoints) == ("llm", 4, False)
  with pytest.raises(ConfigError, match=r"--config.lora.rank=four: 'four' is not a valid int for config key 'lora.rank'"):
    load_config(TINY, flag_settings(["--config.lora.rank=four"]))
  with pytest.raises(ConfigError, match="optimizer.name"):
    load_config(TINY, ["optimizer.name=rmsprop"])
  with pytest.raises(ConfigError, match="grad_accum_steps"):
    load_config(TINY, ["grad_accum_steps=3"])


def test_model_overrides_are_settable_from_the_command_line():
  config = load_config(TINY, flag_settings(["--config.model_overrides.llm.dropout=0.1",
                                            "--config.model_overrides.img.scan=false"]))
  model_cfg = params.resolve_model(config).model_cfg
  assert model_cfg["llm"]["dropout"] == 0.1 and model_cfg["img"]["scan"] is False
  assert model_cfg["llm"]["vocab_size"] == 2048  # the config file's own override is kept
  assert load_config(TINY).model_overrides.llm.dropout is None
  assert "dropout" not in params.resolve_model(load_config(TINY)).model_cfg["llm"]  # unset: the model's own
  with pytest.raises(ConfigError, match="not settable: set config.remat_policy"):
    load_config(TINY, flag_settings(["--config.model_overrides.llm.remat_policy=none"]))
  with pytest.raises(ConfigError, match="unknown config key 'model_overrides.llm.dropuot'.*'model_overrides.llm.dropout'"):
    load_config(TINY, flag_settings(["--config.model_overrides.llm.dropuot=0.1"]))


def test_unknown_key_is_one_line_naming_the_flag_and_a_suggestion():
  with pytest.raises(ConfigError) as caught:
    load_config(TINY, flag_settings(["--config.lrr=1"]))
  message = str(caught.value)
  assert "\n" not in message and caught.value.source == "--config.lrr=1"
  assert message.startswith("--config.lrr=1: unknown config key 'lrr' (did you mean 'optimizer.lr'?")
  with pytest.raises(ConfigError, match="'mesh' is a group of keys; set them one by one"):
    load_config(TINY, flag_settings(["--config.mesh=1"]))
  with pytest.raises(ConfigError, match="--workdir=x"):
    flag_settings(["--workdir=x"])


def test_a_key_set_twice_names_both_sources():
  with pytest.raises(ConfigError, match=r"'optimizer.lr' is set twice: by --config.optimizer.lr=1 and by "
                                        r"--config.optimizer.lr=2"):
    load_config(TINY, flag_settings(["--config.optimizer.lr=1", "--config.optimizer.lr=2"]))
  with pytest.raises(ConfigError, match=r"'optimizer.lr' is set twice: by parameter lr and by override "
                                        r"'optimizer.lr=0.1'"):
    load_config(TINY, [Setting("optimizer.lr", 1e-3, "parameter lr"), config_lib.parse_assignment(
        "optimizer.lr=0.1", "override 'optimizer.lr=0.1'")])


def test_total_steps_and_epochs_replace_each_other(tmp_path):
  assert (load_config(TINY).total_steps, load_config(TINY).epochs) == (20, None)
  config = load_config(TINY, flag_settings(["--config.epochs=2"]))  # the caller's epochs replaces the file's steps
  assert (config.total_steps, config.epochs) == (None, 2.0)
  full_adam = str(CONFIGS[0].parent / "full_adam.py")  # sets epochs = 3
  config = load_config(full_adam, [Setting("total_steps", 5, "parameter total_steps")])
  assert (config.total_steps, config.epochs) == (5, None)
  with pytest.raises(ConfigError, match=r"'total_steps' and 'epochs' are exclusive.*--config.total_steps=5 and "
                                        r"--config.epochs=1"):
    load_config(TINY, flag_settings(["--config.total_steps=5", "--config.epochs=1"]))
  both = tmp_path / "both.py"
  both.write_text("from components.finetune.config import defaults\n\ndef get_config():\n  c = defaults()\n"
                  "  c.total_steps = 10\n  c.epochs = 2.0\n  return c\n")
  with pytest.raises(ConfigError, match=r"both.py sets both total_steps \(10\) and epochs \(2.0\)"):
    load_config(str(both))
  neither = tmp_path / "neither.py"
  neither.write_text("from components.finetune.config import defaults\n\ndef get_config():\n  return defaults()\n")
  with pytest.raises(ConfigError, match="set config.total_steps or config.epochs"):
    load_config(str(neither))
  with pytest.raises(ConfigError, match="must be positive"):
    load_config(TINY, flag_settings(["--config.total_steps=0"]))


def test_config_files_declare_no_new_keys(tmp_path):
  typo = tmp_path / "typo.py"
  typo.write_text("from components.finetune.config import defaults\n\ndef get_config():\n  c = defaults()\n"
                  "  c.optimizer.lrr = 1.0\n  return c\n")
  with pytest.raises(ConfigError) as caught:
    load_config(str(typo))
  assert str(caught.value) == (f"config file {typo}, line 5: unknown config key 'lrr' (did you mean 'lr'? every "
                               "key is declared in components/finetune/config.py defaults())")


def test_cli_rejects_unknown_key_in_one_line(tmp_path, capsys):
  from components.finetune.__main__ import main
  with pytest.raises(SystemExit) as caught:
    main(["--config", TINY, "--workdir", str(tmp_path), "--config.nope=1"])
  assert caught.value.code == 2
  err = capsys.readouterr().err
  assert err.strip().splitlines()[-1].endswith("--config.nope=1: unknown config key 'nope' (every key is declared "
                                               "in components/finetune/config.py defaults())")
  assert "Traceback" not in err
  with pytest.raises(SystemExit):
    main(["--config", TINY, "--workdir", str(tmp_path), "--config.total_steps=5", "--config.epochs=1"])
  assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
      "config keys 'total_steps' and 'epochs' are exclusive, but both are set (--config.total_steps=5 and "
      "--config.epochs=1); give one")
  assert not any(tmp_path.iterdir())  # nothing started
