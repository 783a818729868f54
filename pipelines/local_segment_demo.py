"""The offline segmentation demo's one config (`python -m pipelines.local --task segment`): tune it here.

`get_config()` is a finetune config file (components/finetune/configs style) the pipeline hands to the
trainer; `DEMO` sizes the synthetic data (`pipelines.synthetic.make_segmentation_dataset`), the mask codec
fitted at start-up (`synthetic.make_demo_codec`) and the evaluation. Budget: the whole DAG within 20
minutes on a 2-core CPU, ending with the tuned model's `miou` on the synthetic validation split
>= 0.6 x `miou_ceiling` and its `seg_token_acc` >= the base model's + 0.2
(tests/pipelines/test_segment_demo.py).

The same model and image size as the detection demo (pipelines/local_demo.py: what made that one learn
in minutes applies here too). One object per image: each answer is 4 `<loc>` + 16 `<seg>` tokens and the
class (22 tokens). With 1-2 occluding objects (answers up to 46 tokens) the same 1500 steps learned the
`<seg>` codes but not where objects are: every image got about the same box (miou 0.17 against a ceiling
of 0.91, the boxes' 4 tokens being a fifth of the loss), in twice the training time. Measured:
benchmarks/RESULTS.md.
"""
from pipelines import local_demo

DEMO = dict(
    model="demo-v2",          # components.paligemma.configs name; random initial weights
    train_images=4000,        # 3000 overfit (two objects per image: validation loss 1.35 against 0.9 in training)
    valid_images=40,
    max_objects=1,            # shapes per image (1..max_objects); prompts are per class
    grid=7,                   # positions and sides snap to 7 pixels, as the detection demo's (any pixel: boxes
                              # were not learned in 1500 steps with two objects per image, box_acc50 0.08)
    seed=0,
    codec_masks=3000,         # synthetic object masks the demo's codec is fitted on (another seed's shapes)
    codec_steps=400,          # fit_vqvae steps: reconstruction IoU about 0.95 on held-out shapes
    max_decode_len=24,        # 4 loc + 16 seg + class = 22 tokens, then eos
    eval_limit=0,             # 0 = the whole validation split
)


def get_config(arg=None):
  c = local_demo.get_config(arg)  # the detection demo's training: same model, optimizer, batch and steps
  c.model_name = DEMO["model"]
  c.text_len = 28  # prefix (2) + the answer (22) + bos, separator, eos, and a margin
  c.seed = DEMO["seed"]
  return c
