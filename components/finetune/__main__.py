"""python -m components.finetune --config components/finetune/configs/<name>.py --workdir DIR [--config.KEY=VALUE ...]

Rerun the same command to resume a stopped or preempted run. Multi-host: started from the environment
Vertex AI / GKE / TPU VMs provide, or with --coordinator-address/--num-processes/--process-id.
"""
from __future__ import annotations

import logging
import sys

from components.common import cli

PROG = "python -m components.finetune"


def build_parser() -> cli.ArgumentParser:
  parser = cli.ArgumentParser(
      prog=PROG, description=__doc__.split("\n\n", 1)[1],
      epilog="Any config key can be overridden as --config.KEY=VALUE (big_vision's spelling, e.g. "
             "--config.optimizer.lr=1e-4) or, as in pipelines.local, --set KEY=VALUE; each key once. Unknown keys "
             "are an error. epochs replaces the config's total_steps and the other way round. "
             "Configs: components/finetune/configs/.")
  parser.add_argument("--config", required=True, help="ml_collections config file (a .py with get_config)")
  parser.add_argument("--workdir", required=True, help="output/resume directory, local or gs://")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="a config override, e.g. --set optimizer.lr=1e-4 (repeatable); the same as "
                      "--config.optimizer.lr=1e-4")
  parser.add_argument("--coordinator-address", deprecated=("--coordinator_address",),
                      help="host:port of process 0 (multi-process runs)")
  parser.add_argument("--num-processes", type=int, deprecated=("--num_processes",),
                      help="number of processes of a multi-process run")
  parser.add_argument("--process-id", type=int, deprecated=("--process_id",),
                      help="this process's index, 0 .. num-processes - 1")
  return parser


def main(argv=None) -> int:
  from components.finetune import preemption  # light: no jax until the trainer is imported below

  preemption.exit_on_sigterm()  # first thing: a SIGTERM during start-up exits 143 with one line
  parser = build_parser()
  args, rest = parser.parse_known_args(argv)

  from components.common.errors import storage_error
  from components.common.train_checkpoints import CheckpointError
  from components.finetune import config as config_lib, data, task  # after argparse: --help is fast
  unknown = [arg for arg in rest if not arg.startswith("--config.")]
  if unknown:
    parser.error(f"unrecognized arguments: {' '.join(unknown)}")
  try:  # the whole config is checked before anything starts
    settings = config_lib.flag_settings(rest) + [config_lib.parse_assignment(text, f"--set {text}")
                                                 for text in args.set]
    config = config_lib.load_config(args.config, settings)
  except config_lib.ConfigError as e:
    cli.fail(parser, str(e))
  from components.finetune import distributed, trainer
  # force: importing absl (through orbax) already put a handler on the root logger.
  logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout,
                      force=True)
  logging.getLogger("components").setLevel(logging.INFO)  # ours; orbax/absl chatter stays at WARNING
  distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
  try:
    result = trainer.train(config, args.workdir)
  except data.TooFewExamples as e:
    return cli.report(parser, str(task.too_few_examples(e, settings, args.config)))
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
