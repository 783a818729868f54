"""The offline demo's one config (`python -m pipelines.local` with no arguments): tune it here.

`get_config()` is a finetune config file (components/finetune/configs style) the pipeline hands to the
trainer; `DEMO` sizes the synthetic data and the evaluation. Budget: the whole DAG in 15 minutes on a
2-core CPU, ending with the tuned model's mAP@0.5 on the synthetic validation split >= 0.5.
"""
from components.finetune.config import defaults

DEMO = dict(
    model="small-v2",         # components.paligemma.configs name; random initial weights
    train_images=2000,        # > examples seen in training: the model cannot memorise its way to a low loss
    valid_images=40,
    grid=7,                   # shapes snap to a 7-pixel grid (half a ViT patch): 17 location values to learn
    seed=0,
    max_decode_len=16,        # 2 objects = 2 x (4 loc + label) + " ;" = 12 tokens, then eos
    eval_limit=0,             # 0 = the whole validation split
)


def get_config(arg=None):
  del arg
  c = defaults()
  c.model_name = DEMO["model"]
  c.text_len = 24
  c.batch_size = 16
  c.total_steps = 300
  c.trainable = "full"
  c.optimizer.name = "adamw"
  c.optimizer.lr = 1e-3
  c.optimizer.wd = 0.0
  c.optimizer.warmup_percent = 0.05
  c.frozen_dtype = "float32"
  c.remat_policy = "everything_saveable"  # small model: memory is plentiful, recomputing costs time
  c.data_threads = 2
  c.mesh.data, c.mesh.fsdp = -1, 1
  c.seed = DEMO["seed"]
  c.log_every = 20
  c.eval_every = 0
  c.eval_batches = 2
  c.checkpoint_every = 200
  c.keep_checkpoints = 1
  return c
