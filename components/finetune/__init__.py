"""Fine-tuning PaliGemma: the trainer, its configs and the fit planner.

    python -m components.finetune --config components/finetune/configs/tiny_test.py --workdir DIR
    python -m components.finetune.plan --model paligemma2-3b-pt-224 --trainable full --batch 32 \
        --text-len 128 --topology v5e:2x4

    from components.finetune import load_trained_params
    params, model_cfg = load_trained_params(workdir, which="best")
"""
from components.common.workdir import load_trained_params  # evaluate and export import it from common
from components.finetune.config import TRAINABLE_PRESETS, ConfigError, Setting, defaults, load_config
from components.finetune.trainer import TrainingDiverged, train
