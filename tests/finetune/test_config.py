"""Configs: every shipped file builds (down to the abstract sharded train state), overrides are typed,
unknown keys fail."""
import pathlib

import jax
import pytest

from components.common import sharding
from components.finetune import config as config_lib, state

CONFIGS = sorted((pathlib.Path(__file__).resolve().parents[2] / "components/finetune/configs").glob("*.py"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_config_builds(path):
  config = config_lib.load_config(str(path))
  setup = state.build(config, sharding.make_mesh(config.mesh.data, config.mesh.fsdp), total_steps=10)
  n_trainable = sum(x.size for x in jax.tree.leaves(setup.abstract_state["train"]))
  n_all = sum(x.size for x in jax.tree.leaves(setup.abstract_full))
  assert 0 < n_trainable <= n_all


def test_overrides_are_typed_and_unknown_keys_fail():
  path = str(CONFIGS[0].parent / "tiny_test.py")
  config = config_lib.load_config(path, ["optimizer.lr=0.5", "total_steps=7", "trainable=llm", "lora.rank=4"])
  assert config.optimizer.lr == 0.5 and isinstance(config.optimizer.lr, float)
  assert config.total_steps == 7 and config.trainable == "llm" and config.lora.rank == 4
  with pytest.raises(AttributeError, match="lrr"):
    config_lib.load_config(path, ["optimizer.lrr=1"])
  with pytest.raises(ValueError, match="optimizer.name"):
    config_lib.load_config(path, ["optimizer.name=rmsprop"])
  with pytest.raises(ValueError, match="grad_accum_steps"):
    config_lib.load_config(path, ["grad_accum_steps=3"])


def test_cli_rejects_unknown_key(tmp_path):
  from components.finetune.__main__ import main
  with pytest.raises(SystemExit):
    main(["--config", str(CONFIGS[0].parent / "tiny_test.py"), "--workdir", str(tmp_path), "--config.nope=1"])
