"""Full fine-tune on a TPU slice with big_vision's transfer recipe (Adam b2 0.999, clip 1.0, cosine
with 5% warm-up, decoupled weight decay on `.*/kernel$`), every weight and the optimizer state in f32,
FSDP over all chips."""
from components.finetune.config import defaults


def get_config(arg=None):
  del arg
  c = defaults()
  c.model_name = "paligemma2-3b-pt-224"
  c.text_len = 128
  c.batch_size = 32
  c.epochs = 3.0
  c.trainable = "full"
  c.optimizer.name = "adamw"
  c.optimizer.lr = 1e-5
  c.optimizer.b2 = 0.999
  c.optimizer.wd = 3e-7
  c.optimizer.grad_clip_norm = 1.0
  c.optimizer.warmup_percent = 0.05
  c.remat_policy = "nothing_saveable"
  c.mesh.data, c.mesh.fsdp = 1, -1
  c.eval_every = 200
  c.checkpoint_every = 200
  return c
