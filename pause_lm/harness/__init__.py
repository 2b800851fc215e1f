"""A pause-aware lm-evaluation-harness backend (docs/harness.md).

  python -m pause_lm.harness --model pause_lm --model_args pretrained=MODEL_DIR,num_pauses=10 ...

`backend` (the `pause_lm` lm-eval model; needs lm-eval: pip install -e '.[harness]'),
`requests` (lm-eval requests as token rows, pauses placed), `engine` (fixed-shape scoring and
KV-cache generation), `loading` (a MODEL_DIR, step or converted model), `sweep` (metrics vs
M_inf), `periodic` (`harness_evaluator`: lm-eval tasks during training). Importing this
package imports neither lm-eval nor JAX; `periodic` is imported by gin files that name
`harness_evaluator` (`import pause_lm.harness.periodic`).
"""
