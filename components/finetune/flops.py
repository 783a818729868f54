"""Analytic FLOPs of a train step, and MFU.

XLA's cost analysis counts a scanned layer once and runs low on TPU (../shared/reference/TPU_AOT.md), so
we count by hand: 2 FLOPs per weight per token for every matmul the token goes through, plus attention
(QK^T and AV, 4 * S^2 * heads * head_dim per layer), and x3 for forward + backward (model FLOPs: remat's
recomputation is not counted, as in the MFU convention).
"""
from __future__ import annotations

import numpy as np

from components import paligemma
from components.common import policy

# Peak dense bf16 FLOP/s per device (one jax device), from the vendors' spec sheets.
PEAK_FLOPS = {
    "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v5": 459e12,
    "TPU v6 lite": 918e12, "TPU v6e": 918e12,
    "NVIDIA H100": 989e12, "NVIDIA H200": 989e12, "NVIDIA A100": 312e12, "NVIDIA L4": 121e12,
    "Tesla T4": 65e12, "NVIDIA A10G": 70e12,
}


def peak_flops(device) -> float | None:
  """Peak FLOP/s of a jax device, or None when unknown (CPUs)."""
  kind = getattr(device, "device_kind", "")
  for name, flops in sorted(PEAK_FLOPS.items(), key=lambda kv: -len(kv[0])):
    if kind.startswith(name):
      return flops
  return None


def train_flops_per_example(abstract_params, model_cfg: dict, text_len: int) -> float:
  """Model FLOPs (forward + backward) of one training example with `text_len` text tokens."""
  llm = paligemma.configs.resolve_llm(model_cfg["llm"])
  img = paligemma.configs.resolve_img(model_cfg["img"])
  n_img_tokens = (img["image_size"] // img["patch_size"]) ** 2
  seq = n_img_tokens + text_len
  sizes = {k: int(np.prod(v.shape)) for k, v in policy.flatten(abstract_params).items()}
  img_weights = sum(n for k, n in sizes.items() if k.startswith("img/") and k != "img/pos_embedding")
  embedding = sizes["llm/embedder/input_embedding"]
  llm_weights = sum(n for k, n in sizes.items() if k.startswith("llm/")) - embedding
  forward = (2 * img_weights * n_img_tokens
             + 4 * n_img_tokens ** 2 * img["width"] * img["depth"]
             + 2 * llm_weights * seq
             + 4 * seq ** 2 * llm["num_heads"] * llm["head_dim"] * llm["depth"]
             + 2 * embedding * text_len)  # tied logits over the text positions
  return 3.0 * forward


def mfu(flops_per_step: float, step_seconds: float, devices) -> float | None:
  peaks = [peak_flops(d) for d in devices]
  if not peaks or None in peaks or step_seconds <= 0:
    return None
  return flops_per_step / step_seconds / sum(peaks)
