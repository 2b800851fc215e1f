r"""Converts Hugging Face checkpoints to pause-lm checkpoints and back.

  # HF -> an Orbax checkpoint usable as INIT_CHECKPOINT, plus its gin model file:
  python -m pause_lm.convert --from_hf=HF_DIR --model_dir=DIR
  #   DIR/checkpoints/0/state   the parameters (with the <pause> row; see pause_lm/hf.py)
  #   DIR/model.gin             the ModelConfig to train/evaluate it with (--gin_file=DIR/model.gin)
  #   DIR/hf_base/              HF_DIR's config.json and tokenizer files, for the way back

  # pause-lm -> HF (config.json + model.safetensors, and the tokenizer with <pause> when known):
  python -m pause_lm.convert --to_hf=HF_DIR --model_dir=DIR [--hf_base=...] [--pause_id=...]

`--to_hf` reads the model from `--gin_file` if given, else DIR/model.gin, else the run's
operative DIR/config.gin, and the latest checkpoint under DIR (a converted folder or a training
run's MODEL_DIR). The HF folder loads with transformers' AutoModelForCausalLM/AutoTokenizer.
Use DIR as INIT_CHECKPOINT of a new MODEL_DIR, not as a MODEL_DIR to resume: it holds
parameters only, no optimizer state or input position.
"""

from collections.abc import Sequence
import dataclasses
import os
import shutil

from absl import app
from absl import flags
from absl import logging
from etils import epath
import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from pause_lm.checkpointing import checkpointer as checkpointing
from pause_lm.runtime import gin_utils
from pause_lm.hf import models as hf
from pause_lm.training import train_state
from pause_lm.model.transformer import Decoder, ModelConfig

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

MODEL_GIN = 'model.gin'
HF_BASE = 'hf_base'
OPERATIVE_GIN = 'config.gin'


def model_gin(config: ModelConfig, comment: str) -> str:
  """A gin model file that rebuilds `config` (every field bound, NUM_EMBEDDINGS as a macro)."""
  lines = [f'# {line}' for line in comment.splitlines()]
  lines += [
    'import pause_lm.model.transformer',
    '',
    f'NUM_EMBEDDINGS = {config.num_embeddings}',
    '',
    'ModelConfig.num_embeddings = %NUM_EMBEDDINGS',
  ]
  for field in dataclasses.fields(config):
    if field.name == 'num_embeddings':
      continue
    value = getattr(config, field.name)
    if isinstance(value, jnp.dtype):
      value = value.name
    lines.append(f'ModelConfig.{field.name} = {value!r}')
  return '\n'.join(lines) + '\n'


def from_hf(
  hf_dir: str, model_dir: str, dtype: str = 'float32', scan_layers: bool = False
) -> ModelConfig:
  """Writes model_dir/checkpoints/0/state, model_dir/model.gin and model_dir/hf_base."""
  config, params = hf.from_pretrained(hf_dir, dtype=dtype, scan_layers=scan_layers)
  source = hf.read_config(hf_dir)
  root = checkpointing.absolute_path(model_dir)
  state_dir = root / 'checkpoints' / '0' / checkpointing.STATE
  if state_dir.exists():
    raise FileExistsError(f'{state_dir} exists: convert into a new --model_dir.')
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(state_dir, {'params': params})
  checkpointer.wait_until_finished()
  del params
  comment = (
    f'Written by `python -m pause_lm.convert --from_hf` from {hf_dir}\n'
    f'({source.get("model_type")}). <pause> id = {hf.vocab_size(source)} (the '
    "checkpoint's vocab_size); rows padded to NUM_EMBEDDINGS."
  )
  (root / MODEL_GIN).write_text(model_gin(config, comment))
  base = root / HF_BASE
  base.mkdir(parents=True, exist_ok=True)
  for name in (hf.CONFIG_FILE,) + hf.TOKENIZER_FILES:
    if os.path.exists(os.path.join(hf_dir, name)):
      shutil.copyfile(os.path.join(hf_dir, name), os.fspath(base / name))
  logging.info('Wrote %s (INIT_CHECKPOINT) and %s.', root, root / MODEL_GIN)
  return config


def _checkpoint_params(model_dir: str, config: ModelConfig):
  """The latest checkpoint's params on one device (one copy of the model)."""
  step_dir = checkpointing.resolve_checkpoint(model_dir)
  if config.num_embeddings is None:
    # An operative config that sized the table from its task: take the saved table's size.
    metadata = ocp.PyTreeCheckpointer().metadata(step_dir / checkpointing.STATE).item_metadata.tree
    config = dataclasses.replace(
      config, num_embeddings=metadata['params']['token_embed']['embedding'].shape[0]
    )
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(
    lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
    nn.unbox(train_state.abstract_params(Decoder(config))),
  )
  return config, checkpointing.load_params(step_dir, abstract)


def to_hf(
  model_dir: str, hf_dir: str, hf_base: str | None = None, pause_id: int | None = None
) -> None:
  """Writes hf_dir from the latest checkpoint under model_dir; gin must hold its ModelConfig."""
  root = os.fspath(checkpointing.absolute_path(model_dir))
  if hf_base is None and os.path.exists(os.path.join(root, HF_BASE, hf.CONFIG_FILE)):
    hf_base = os.path.join(root, HF_BASE)
  if pause_id is None and hf_base:
    pause_id = hf.vocab_size(hf.read_config(hf_base))
  config, params = _checkpoint_params(root, ModelConfig())
  hf.save_pretrained(config, params, hf_dir, pause_id=pause_id, base_dir=hf_base)
  logging.info('Wrote %s (<pause> id %s).', hf_dir, pause_id)


def _model_gin_files(model_dir: str) -> list[str]:
  for name in (MODEL_GIN, OPERATIVE_GIN):
    path = epath.Path(checkpointing.absolute_path(model_dir)) / name
    if path.exists():
      return [os.fspath(path)]
  raise FileNotFoundError(
    f'{model_dir} has no {MODEL_GIN} or {OPERATIVE_GIN}: pass the model '
    'with --gin_file (the gin model file it was trained with).'
  )


def main(argv: Sequence[str]) -> None:
  gin_utils.reject_positional_args(argv)
  logging.set_verbosity(logging.INFO)
  if bool(_FROM_HF.value) == bool(_TO_HF.value) or not _MODEL_DIR.value:
    raise app.UsageError(
      'Give --model_dir and exactly one of --from_hf=HF_DIR (HF -> pause-lm) '
      'and --to_hf=HF_DIR (pause-lm -> HF).'
    )
  if _FROM_HF.value:
    from_hf(_FROM_HF.value, _MODEL_DIR.value, _DTYPE.value, _SCAN_LAYERS.value)
    return
  gin_files = FLAGS.gin_file or _model_gin_files(_MODEL_DIR.value)
  gin_utils.parse_settings(
    lambda: gin_utils.parse_gin(gin_files, FLAGS.gin_bindings, FLAGS.gin_search_paths)
  )
  to_hf(_MODEL_DIR.value, _TO_HF.value, _HF_BASE.value, _PAUSE_ID.value)
  gin.clear_config()


if __name__ == '__main__':
  gin_utils.run(main)
