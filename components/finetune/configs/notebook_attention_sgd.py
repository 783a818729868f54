"""The official 16 GB GPU recipe (big_vision's finetune_paligemma notebook).

Only `llm/layers/attn/*` trains, in f32 with plain SGD (lr 0.03, cosine, 10% warm-up, no clipping);
everything else is frozen in bf16, which is what lets a 3B model train on one 16 GB card.
"""
from components.finetune.config import defaults


def get_config(arg=None):
  del arg
  c = defaults()
  c.model_name = "paligemma2-3b-pt-224"
  c.text_len = 128
  c.batch_size = 8
  c.total_steps = 64
  c.trainable = "attention"
  c.optimizer.name = "sgd"
  c.optimizer.lr = 0.03
  c.optimizer.grad_clip_norm = 0.0
  c.optimizer.warmup_percent = 0.10
  c.frozen_dtype = "bfloat16"
  c.mesh.data, c.mesh.fsdp = 1, -1
  c.log_every = 1
  c.eval_every = 16
  c.checkpoint_every = 16
  return c
