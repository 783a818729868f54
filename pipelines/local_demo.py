"""The offline demo's one config (`python -m pipelines.local` with no arguments): tune it here.

`get_config()` is a finetune config file (components/finetune/configs style) the pipeline hands to the
trainer; `DEMO` sizes the synthetic data and the evaluation. Budget: the whole DAG in 15 minutes on a
2-core CPU, ending with the tuned model's mAP@0.5 on the synthetic validation split >= 0.5 (measured:
benchmarks/RESULTS.md). What made the difference, measured on this task (same data, mAP@0.5 of the tuned
model): a narrower model that sees 3x more examples per minute (demo-v2 vs small-v2 at equal wall time:
0.50 vs 0.03), objects at least a quarter of the image (0.83 vs 0.50), 84-pixel images (36 image tokens:
1000 steps in about 4 minutes). 1500 steps leave a margin
for slower machines and other seeds.
"""
from components.finetune.config import defaults

DEMO = dict(
    model="demo-v2",          # components.paligemma.configs name; random initial weights
    train_images=4000,        # 6 epochs in 1500 steps of 16: enough variety that validation follows training
    valid_images=50,
    grid=7,                   # positions and sizes snap to 7 pixels (half a ViT patch): 12 location values
    seed=0,
    max_decode_len=16,        # 2 objects = 2 x (4 loc + label) + " ;" = 11 tokens, then eos
    eval_limit=0,             # 0 = the whole validation split
)


def get_config(arg=None):
  del arg
  c = defaults()
  c.model_name = DEMO["model"]
  c.text_len = 24
  c.batch_size = 16
  c.total_steps = 1500
  c.trainable = "full"
  c.optimizer.name = "adamw"
  c.optimizer.lr = 1e-3
  c.optimizer.wd = 0.0
  c.optimizer.warmup_percent = 0.05
  c.frozen_dtype = "float32"  # everything trains: no frozen weights (compute_dtype, remat: the defaults)
  c.data_threads = 2
  c.mesh.data, c.mesh.fsdp = -1, 1
  c.seed = DEMO["seed"]
  c.log_every = 50
  c.eval_every = 0
  c.eval_batches = 2
  c.checkpoint_every = 250
  c.keep_checkpoints = 2  # the least: a damaged latest checkpoint needs a verified one to fall back to
  return c
