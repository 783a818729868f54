"""PaliGemma 1 and 2 in JAX/Flax, parameter-compatible with big_vision (see docs/ARCHITECTURE.md).

    from components import paligemma
    model_cfg = paligemma.configs.model_config("paligemma2-3b-pt-224")
    model = paligemma.Model(**model_cfg)
    tokens = paligemma.decode(model, params, batch, max_decode_len=32)

The mask codec (`<segNNN>` tokens, big_vision's VQ-VAE) and the segmentation text:

    vqvae = paligemma.load_vqvae("vae-oid.npz")                 # or init_vqvae(seed), fit_vqvae(masks64)
    suffix = paligemma.mask_to_suffix(mask, box, vqvae, "cat")  # "<loc…>×4<seg…>×16 cat"
    parsed = paligemma.suffix_to_masks(answer, height, width, vqvae)  # .objects (masks), .malformed
"""
from components.paligemma import configs
from components.paligemma.decode import decode, decode_uncached, parse_sampler
from components.paligemma.model import Model, init_params, make_attn_mask
from components.paligemma.preprocess import preprocess_image
from components.paligemma.checkpoint import (CheckpointError, flatten_params, infer_config, load, read_shapes, save,
                                            unflatten_params)
from components.paligemma.tokenizer import Tokenizer, train_small_tokenizer
from components.paligemma.hf import from_hf, read_hf_config, to_hf
from components.paligemma import segmentation, vqvae
from components.paligemma.vqvae import decode_masks, encode_masks, init_vqvae, load_vqvae, save_vqvae
from components.paligemma.segmentation import (MalformedSegment, ParsedSegmentation, SegObject, mask_to_suffix,
                                               masks_to_suffix, parse_segments, suffix_to_masks)
from components.paligemma.vqvae_fit import fit_vqvae
