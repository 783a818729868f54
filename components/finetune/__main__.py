"""python -m components.finetune --config components/finetune/configs/<name>.py --workdir DIR [--config.key=value ...]

Rerun the same command to resume a stopped or preempted run. Multi-host: started from the environment
Vertex AI / GKE / TPU VMs provide, or with --coordinator_address/--num_processes/--process_id.
"""
from __future__ import annotations

import argparse
import logging
import sys


def main(argv=None) -> int:
  from components.finetune import preemption  # light: no jax until the trainer is imported below

  preemption.exit_on_sigterm()  # first thing: a SIGTERM during start-up exits 143 with one line
  parser = argparse.ArgumentParser(
      prog="python -m components.finetune", description=__doc__.split("\n\n", 1)[1],
      epilog="Any config key can be overridden as --config.KEY=VALUE (e.g. --config.optimizer.lr=1e-4, "
             "--config.trainable=llm); each key once. Unknown keys are an error. --config.epochs replaces the config's "
             "total_steps and the other way round. Configs: components/finetune/configs/.")
  parser.add_argument("--config", required=True, help="ml_collections config file (a .py with get_config)")
  parser.add_argument("--workdir", required=True, help="output/resume directory, local or gs://")
  parser.add_argument("--coordinator_address", help="host:port of process 0 (multi-process runs)")
  parser.add_argument("--num_processes", type=int)
  parser.add_argument("--process_id", type=int)
  args, rest = parser.parse_known_args(argv)

  from components.common.errors import storage_error
  from components.common.train_checkpoints import CheckpointError
  from components.finetune import config as config_lib, distributed, trainer  # after argparse: --help is fast
  try:  # the whole config is checked before anything starts
    config = config_lib.load_config(args.config, config_lib.flag_settings(rest))
  except config_lib.ConfigError as e:
    parser.error(str(e))
  # force: importing absl (through orbax) already put a handler on the root logger.
  logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout,
                      force=True)
  logging.getLogger("components").setLevel(logging.INFO)  # ours; orbax/absl chatter stays at WARNING
  distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
  try:
    result = trainer.train(config, args.workdir)
  except (trainer.TrainingDiverged, CheckpointError) as e:
    logging.error("%s", e)
    return 1
  except Exception as e:
    if (message := storage_error(e, args.workdir)) is None:
      raise
    logging.error("%s", message)
    return 1
  return preemption.EXIT_CODE if result["status"] == "preempted" else 0


if __name__ == "__main__":
  sys.exit(main())
