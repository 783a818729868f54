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
from components.finetune.config import TRAINABLE_PRESETS, defaults, load_config

_LAZY = {"train": "trainer", "TrainingDiverged": "trainer", "load_trained_params": "load"}


def __getattr__(name):
  if name in _LAZY:
    import importlib
    return getattr(importlib.import_module(f"components.finetune.{_LAZY[name]}"), name)
  raise AttributeError(f"module 'components.finetune' has no attribute {name!r}")
