"""Hugging Face checkpoints to pause-lm checkpoints and back, as folders on disk.

`from_hf` writes what training reads: an Orbax step with the parameters (INIT_CHECKPOINT), the
gin model file that rebuilds the model, and the HF config and tokenizer files for the way back.
`to_hf` reads the latest checkpoint of a converted folder or a training run and writes an HF
folder. `python -m pause_lm.convert` is the command over these two; the tensor names and the
`<pause>` row are `pause_lm.hf.models`.

Both check what they will need before the slow part: `from_hf` the HF config, every tensor and
the tokenizer files before anything is written (an invalid tokenizer.json would otherwise be
kept in hf_base/ and break the way back); `to_hf` the target folder and the base's tokenizer
before the checkpoint is read.
"""

import dataclasses
import os
import shutil

from absl import logging
from etils import epath
import flax.linen as nn
import jax
import jax.numpy as jnp

from pause_lm.checkpointing import step_folder
from pause_lm.checkpointing import verified_read
from pause_lm.checkpointing import warm_start
from pause_lm.hf import models as hf
from pause_lm.model import sizing
from pause_lm.model.transformer import Decoder, ModelConfig

# In a converted folder: the ModelConfig, and the HF files `to_hf` carries back over.
MODEL_GIN = 'model.gin'
HF_BASE = 'hf_base'
# In a training run's MODEL_DIR: the operative config, which binds its ModelConfig too.
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
  root = step_folder.absolute_path(model_dir)
  step_dir = root / 'checkpoints' / '0'
  state_dir = step_dir / step_folder.STATE
  if state_dir.exists():
    raise FileExistsError(f'{state_dir} exists: convert into a new --model_dir.')
  source, _ = hf.read_model_config(hf_dir)
  hf.check_tokenizer_files(hf_dir, hf.vocab_size(source))
  config, params = hf.from_pretrained(hf_dir, dtype=dtype, scan_layers=scan_layers)
  step_folder.save_params(step_dir, params)
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


def checkpoint_params(model_dir: str, config: ModelConfig):
  """The checkpoint's (config, params), params on one device (one copy of the model).

  Read as a resume reads: verified against the recorded checksums; a run's folder falls back
  to its newest intact step, one step folder that is damaged is refused (verified_read).
  """

  def read(step_dir):
    step_config = config
    if step_config.num_embeddings is None:
      # An operative config that sized the table from its task: take the saved table's size.
      metadata = step_folder.param_metadata(step_dir)
      step_config = dataclasses.replace(
        config, num_embeddings=metadata['token_embed']['embedding'].shape[0]
      )
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
      nn.unbox(sizing.abstract_params(Decoder(step_config))),
    )
    return step_config, warm_start.load_step_params(step_dir, abstract)

  return verified_read.read_newest_intact(model_dir, read)[1]


def to_hf(
  model_dir: str,
  hf_dir: str,
  hf_base: str | None = None,
  pause_id: int | None = None,
  overwrite: bool = False,
) -> None:
  """Writes hf_dir from the latest checkpoint under model_dir; gin must hold its ModelConfig.

  hf_dir must not hold a model already unless `overwrite` (see `hf.save_pretrained`).
  """
  hf.check_export_target(hf_dir, overwrite)
  root = os.fspath(step_folder.absolute_path(model_dir))
  if hf_base is None and os.path.exists(os.path.join(root, HF_BASE, hf.CONFIG_FILE)):
    hf_base = os.path.join(root, HF_BASE)
  if pause_id is None and hf_base:
    pause_id = hf.vocab_size(hf.read_model_config(hf_base)[0])
  if hf_base:
    hf.check_tokenizer_files(hf_base, pause_id)
  config, params = checkpoint_params(root, ModelConfig())
  hf.save_pretrained(
    config, params, hf_dir, pause_id=pause_id, base_dir=hf_base, overwrite=overwrite
  )
  logging.info('Wrote %s (<pause> id %s).', hf_dir, pause_id)


def model_gin_files(model_dir: str) -> list[str]:
  """The gin file that holds model_dir's ModelConfig: its model.gin, else its config.gin."""
  for name in (MODEL_GIN, OPERATIVE_GIN):
    path = epath.Path(step_folder.absolute_path(model_dir)) / name
    if path.exists():
      return [os.fspath(path)]
  raise FileNotFoundError(
    f'{model_dir} has no {MODEL_GIN} or {OPERATIVE_GIN}: pass the model '
    'with --gin_file (the gin model file it was trained with).'
  )
