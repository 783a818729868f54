"""Fine-tuning PaliGemma: the trainer, its configs and the fit planner.

    python -m components.finetune --config components/finetune/configs/tiny_test.py --workdir DIR
    python -m components.finetune.plan --model paligemma2-3b-pt-224 --trainable full --batch 32 \
        --text-len 128 --topology v5e:2x4

    from components.finetune import load_trained_params
    params, model_cfg = load_trained_params(workdir, which="best")

The trainer (data: grain; checkpoints: orbax) loads on first use of `train`, `TrainingDiverged` or
`load_trained_params`, so the model-building modules (config, state, step, autotune) import without them
(benchmarks/gpu_suite.py).
"""
import importlib

# Resolved on first use: importing the package stays cheap (no jax), so `python -m components.finetune`
# installs its SIGTERM handler before the heavy imports (preemption.py).
_EXPORTS = {"TRAINABLE_PRESETS": "components.finetune.config", "ConfigError": "components.finetune.config",
            "Setting": "components.finetune.config", "defaults": "components.finetune.config",
            "load_config": "components.finetune.config",
            "load_trained_params": "components.common.workdir",  # evaluate and export import it from common
            "TrainingDiverged": "components.finetune.trainer", "train": "components.finetune.trainer",
            "CheckpointError": "components.common.train_checkpoints"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
  if name not in _EXPORTS:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  return getattr(importlib.import_module(_EXPORTS[name]), name)
