"""A tiny random-init model for tests and CI: trains in seconds on a CPU.

Other test models: `--set model_name=tiny-v1` (or `tiny-mha`, `small-v2`).
"""
from components.finetune.config import defaults


def get_config(arg=None):
  del arg
  c = defaults()
  c.model_name = "tiny-v2"
  c.checkpoint = ""  # random init
  c.model_overrides.llm.vocab_size = 2048  # the small tokenizer (components.paligemma.train_small_tokenizer)
  c.text_len = 16
  c.batch_size = 8
  c.total_steps = 20
  c.trainable = "full"
  c.optimizer.name = "adam"
  c.optimizer.lr = 3e-3
  c.optimizer.warmup_percent = 0.1
  c.frozen_dtype = "float32"  # exact comparisons in tests
  c.compute_dtype = "float32"  # likewise: bf16 matmuls round differently per batch split and device count
  c.remat_policy = "none"
  c.data_threads = 2
  c.mesh.data, c.mesh.fsdp = 1, -1
  c.fsdp_min_bytes = 4 * 2**10  # small enough that the tiny model's big leaves do get sharded
  c.log_every = 5
  c.eval_every = 10
  c.checkpoint_every = 5
  c.keep_checkpoints = 2
  c.async_checkpoints = True
  return c
