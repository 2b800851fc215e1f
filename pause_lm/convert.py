r"""Converts Hugging Face checkpoints to pause-lm checkpoints and back.

  # HF -> an Orbax checkpoint usable as INIT_CHECKPOINT, plus its gin model file:
  python -m pause_lm.convert --from_hf=HF_DIR --model_dir=DIR
  #   DIR/checkpoints/0/state   the parameters (with the <pause> row; see pause_lm/hf/models.py)
  #   DIR/model.gin             the ModelConfig to train/evaluate it with (--gin_file=DIR/model.gin)
  #   DIR/hf_base/              HF_DIR's config.json and tokenizer files, for the way back

  # pause-lm -> HF (config.json + model.safetensors, and the tokenizer with <pause> when known):
  python -m pause_lm.convert --to_hf=HF_DIR --model_dir=DIR [--hf_base=...] [--pause_id=...] \
      [--overwrite]

`--to_hf` reads the model from `--gin_file` if given, else DIR/model.gin, else the run's
operative DIR/config.gin, and the latest checkpoint under DIR (a converted folder or a training
run's MODEL_DIR). The HF folder loads with transformers' AutoModelForCausalLM/AutoTokenizer.
Use DIR as INIT_CHECKPOINT of a new MODEL_DIR, not as a MODEL_DIR to resume: it holds
parameters only, no optimizer state or input position.

`--from_hf` checks HF_DIR before writing anything: config.json (valid JSON, every size a
positive integer), every tensor's shape and dtype against it (floats only; embedding rows equal
to vocab_size; none missing, none extra), every value finite, and the tokenizer files. `--to_hf`
writes into a temporary folder beside HF_DIR and moves it into place when complete; an HF_DIR
that already holds a model (config.json, *.safetensors, an index, tokenizer files) is refused
unless `--overwrite` is given, which removes those files first (other files stay). A problem
stops the command with one message naming the file and the fix, and exit status 1.
"""

from collections.abc import Sequence

from absl import app
from absl import flags
from absl import logging
import gin

from pause_lm.hf import convert
from pause_lm.runtime import gin_utils

FLAGS = flags.FLAGS
_FROM_HF = flags.DEFINE_string('from_hf', None, 'Hugging Face folder to convert from.')
_TO_HF = flags.DEFINE_string('to_hf', None, 'Hugging Face folder to write.')
_MODEL_DIR = flags.DEFINE_string(
  'model_dir', None, 'The pause-lm side: written by --from_hf, read by --to_hf.'
)
_DTYPE = flags.DEFINE_string(
  'dtype',
  'float32',
  '--from_hf: compute dtype written to model.gin '
  "('bfloat16' on accelerators). Parameters stay float32.",
)
_SCAN_LAYERS = flags.DEFINE_bool(
  'scan_layers', False, '--from_hf: store the layers stacked for ModelConfig.scan_layers = True.'
)
_HF_BASE = flags.DEFINE_string(
  'hf_base',
  None,
  '--to_hf: HF folder whose config keys and tokenizer to carry over (default: MODEL_DIR/hf_base).',
)
_PAUSE_ID = flags.DEFINE_integer(
  'pause_id', None, "--to_hf: the <pause> id (default: the hf_base config's vocab_size)."
)
_OVERWRITE = flags.DEFINE_bool(
  'overwrite',
  False,
  '--to_hf: replace a model already in the HF folder (its model and tokenizer files are '
  'removed first); without it such a folder is refused.',
)


def _convert() -> None:
  if _FROM_HF.value:
    convert.from_hf(_FROM_HF.value, _MODEL_DIR.value, _DTYPE.value, _SCAN_LAYERS.value)
    return
  gin_files = FLAGS.gin_file or convert.model_gin_files(_MODEL_DIR.value)
  gin_utils.parse_settings(
    lambda: gin_utils.parse_gin(gin_files, FLAGS.gin_bindings, FLAGS.gin_search_paths)
  )
  convert.to_hf(_MODEL_DIR.value, _TO_HF.value, _HF_BASE.value, _PAUSE_ID.value, _OVERWRITE.value)
  gin.clear_config()


def main(argv: Sequence[str]) -> None:
  gin_utils.reject_positional_args(argv)
  logging.set_verbosity(logging.INFO)
  if bool(_FROM_HF.value) == bool(_TO_HF.value) or not _MODEL_DIR.value:
    raise app.UsageError(
      'Give --model_dir and exactly one of --from_hf=HF_DIR (HF -> pause-lm) '
      'and --to_hf=HF_DIR (pause-lm -> HF).'
    )
  # The library's own errors (a bad HF file, a damaged checkpoint, an occupied target) end
  # the command as one line with their fix: gin_utils.run prints them (console.report_errors).
  _convert()


if __name__ == '__main__':
  gin_utils.run(main)
