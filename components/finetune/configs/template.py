"""Fork me: a commented finetune config listing every key.

  python -m components.finetune --config components/finetune/configs/template.py --workdir DIR \
      --set data_dir=gs://bucket/dataset --set checkpoint=gs://bucket/model/paligemma2-3b-pt-224.b16.npz

Copy this file, change what your run needs, delete the rest (unset keys keep the defaults of
components/finetune/config.py).
"""
from components.finetune.config import defaults


def get_config(arg=None):
  del arg
  c = defaults()

  # --- Data (a dataset directory from components.convert) ---
  c.data_dir = ""  # holds records/{train,valid}-*.array_record
  c.train_split, c.valid_split = "train", "valid"
  c.text_len = 64  # prefix + "\n" + suffix tokens; longer examples are truncated (the loss skips the cut)
  c.batch_size = 32  # global; each step sees this many examples
  c.epochs = 3.0  # steps = epochs * train examples // batch_size; or set c.total_steps instead (not both)

  # --- Model ---
  c.model_name = "paligemma2-3b-pt-224"  # any name of components.paligemma.configs (without a checkpoint)
  c.checkpoint = ""  # .npz or model directory from components.download; "" = random init (tests)
  c.model_overrides.llm.dropout = 0.0  # any tower field (None = the model's own), e.g. llm.dropout
  c.tokenizer = ""  # default: tokenizer.model beside the checkpoint

  # --- What trains ---
  c.trainable = "freeze-img"  # attention | llm | full | freeze-img | none | "regex,regex"
  c.lora.rank = 0  # > 0 adds adapters on lora.targets (merged into the weights on export)
  c.lora.alpha = 16.0
  c.lora.targets = "llm/layers/attn/.*,llm/layers/mlp/.*"

  # --- Optimizer: big_vision's transfer recipe ---
  c.optimizer.name = "adamw"  # sgd | adam | adamw | adafactor
  c.optimizer.lr = 1e-5
  c.optimizer.b2 = 0.999
  c.optimizer.wd = 3e-7  # decoupled, only on .*/kernel$ (the image tower's dense layers)
  c.optimizer.grad_clip_norm = 1.0
  c.optimizer.schedule = "cosine"
  c.optimizer.warmup_percent = 0.05
  c.label_smoothing = 0.0
  c.grad_accum_steps = 1  # trade speed for memory: the step runs batch_size / this examples at once

  # --- Precision and memory ---
  c.frozen_dtype = "bfloat16"  # frozen weights; trainable weights and optimizer state are f32
  c.compute_dtype = "bfloat16"  # matmuls of both towers; float32 for exact comparisons
  c.remat_policy = "auto"  # the fastest that fits memory_limit_gib (0: the device's own), else "none" or a jax policy
  c.memory_limit_gib = 0.0

  # --- Devices ---
  c.mesh.data, c.mesh.fsdp = 1, -1  # pure FSDP over every device

  # --- Bookkeeping ---
  c.seed = 0
  c.log_every = 10
  c.eval_every = 100
  c.checkpoint_every = 100
  c.keep_checkpoints = 2
  return c
