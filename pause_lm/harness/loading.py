"""A model for the harness from `pretrained=`: a training run's MODEL_DIR, one of its step
folders, or a converted Hugging Face model's folder.

  training run     MODEL_DIR/config.gin (the operative config: its ModelConfig) and the step's
                   run info (the task trained on: its vocabulary, prefix-LM or not, its pause
                   variant: M, placement, filler)
  converted model  DIR/model.gin (`python -m pause_lm.convert --from_hf`) and
                   DIR/hf_base/tokenizer.json; a causal LM, no pauses unless asked

The parameters are read as `python -m pause_lm.evaluate` reads them: verified against their
checksums, a run's folder falling back to its newest intact step
(`checkpointing.read_newest_intact`).
"""

import dataclasses
import os
from typing import Any

from absl import logging
from etils import epath
import gin
import jax
import seqio

from pause_lm.checkpointing import step_folder
from pause_lm.checkpointing import verified_read
from pause_lm.checkpointing import warm_start
from pause_lm.data import variants
from pause_lm.hf import convert
from pause_lm.hf import tokenizer as hf_tokenizer
from pause_lm.model import sizing
from pause_lm.model import transformer as model_lib
from pause_lm.pipeline import datasets as data_lib
from pause_lm.runtime import run_dir
from pause_lm.runtime import sharding


@dataclasses.dataclass
class LoadedModel:
  """What the backend needs of a model, whoever loaded it (this module or a training run).

  Attributes:
    params: The decoder's parameters (sharded over `mesh`).
    config: Its ModelConfig (num_embeddings set).
    vocabulary: A PauseVocabulary (the `<pause>` id is its pause_id).
    prefix_lm: Whether it was finetuned prefix-LM (bidirectional over prefix + pauses).
    variant: The pause variant it was finetuned with (None: not a downstream variant).
    causal_pauses: It was finetuned delay-robustly (a random-M variant): its pauses are
      outside the prefix-LM block (`data.is_random_pause_variant`; issue 26).
    sequence_length: The sequence length it was trained with (None: unknown).
    mesh: The mesh its parameters are sharded over.
    source: Where it came from (a step folder), for the results' config.
  """

  params: Any
  config: model_lib.ModelConfig
  vocabulary: seqio.Vocabulary
  prefix_lm: bool
  variant: variants.Variant | None = None
  causal_pauses: bool = False
  sequence_length: int | None = None
  mesh: jax.sharding.Mesh | None = None
  source: str = ''

  @property
  def pause_id(self) -> int:
    return self.vocabulary.pause_id

  @property
  def filler(self) -> str | None:
    return '.' if self.variant is not None and self.variant.kind == 'filler' else None


def _run_root(path: epath.Path) -> epath.Path:
  """MODEL_DIR of a MODEL_DIR, its checkpoints/ folder or one step folder."""
  if (path / step_folder.STATE).exists():  # A step folder: MODEL_DIR/checkpoints/N.
    path = path.parent
  if path.name == run_dir.CHECKPOINTS_DIR:
    path = path.parent
  return path


def _tokenizer_path(root: epath.Path, tokenizer: str | None) -> str | None:
  if tokenizer:
    return tokenizer
  for candidate in (root / convert.HF_BASE / 'tokenizer.json', root / 'tokenizer.json'):
    if candidate.exists():
      return os.fspath(candidate)
  return None


def load(
  pretrained: str,
  *,
  gin_files: tuple[str, ...] = (),
  gin_bindings: tuple[str, ...] = (),
  tokenizer: str | None = None,
  task: str | None = None,
  mesh: jax.sharding.Mesh | None = None,
) -> LoadedModel:
  """Reads a model for the harness (see the module docstring).

  Args:
    pretrained: A MODEL_DIR, its checkpoints/ folder, one step folder, or a converted folder.
    gin_files: The model's gin files; default: the folder's model.gin, else its config.gin.
    gin_bindings: Bindings after them (e.g. 'ModelConfig.max_len = 2048').
    tokenizer: A tokenizer.json (or its folder) to use instead of the run's task vocabulary.
    task: The registered task whose vocabulary, prefix-LM and variant apply; default: the
      task the step was trained on.
    mesh: The mesh to shard the parameters over (default: all devices on `data`).
  """
  path = step_folder.absolute_path(pretrained)
  if not path.exists():
    raise FileNotFoundError(
      f'pretrained={pretrained!r} does not exist: give a MODEL_DIR, one step folder in it, or '
      'a folder written by python -m pause_lm.convert --from_hf.'
    )
  root = _run_root(path)
  candidates = step_folder.candidate_steps(path)
  files = list(gin_files) or convert.model_gin_files(os.fspath(root))
  gin.clear_config()
  gin.parse_config_files_and_bindings(
    files, list(gin_bindings), skip_unknown=True, finalize_config=False
  )
  model = model_lib.ModelConfig()
  run_info = step_folder.read_run_info(candidates[0])
  task = task or run_info.get('task')
  tokenizer_file = _tokenizer_path(root, tokenizer)
  variant, prefix_lm = None, False
  if tokenizer_file is not None and not task:
    vocabulary = hf_tokenizer.hf_vocabulary(tokenizer_file)
  elif task:
    info = data_lib.task_info(task)
    vocabulary = data_lib.get_task(task).output_features['targets'].vocabulary
    if tokenizer_file is not None and tokenizer:
      vocabulary = hf_tokenizer.hf_vocabulary(tokenizer_file)
    model = sizing.model_config_for_task(
      model, info, run_info.get('sequence_length') or model.max_len
    )
    prefix_lm = info.prefix_lm
    parsed = variants.parse_task(task.removesuffix('_eval'))
    variant = None if parsed is None else parsed[1]
  else:
    raise ValueError(
      f'{pretrained} names no task and has no tokenizer.json: pass tokenizer=PATH (a '
      'tokenizer.json) or task=NAME (a registered task whose vocabulary the model uses) in '
      '--model_args.'
    )
  if model.num_embeddings is None:
    raise ValueError(
      f'The model gin of {pretrained} leaves NUM_EMBEDDINGS unset and no task sizes it; pass '
      'task=NAME in --model_args.'
    )
  mesh = mesh or sharding.create_mesh()
  abstract = sizing.sharded_abstract_params(
    model_lib.Decoder(model), mesh, sharding.logical_axis_rules()
  )[0]
  step_dir, params = verified_read.read_newest_intact(
    path, lambda step: warm_start.load_step_params(step, abstract)
  )
  logging.info('Harness: %s (%s), task %s, prefix-LM %s.', step_dir, model, task, prefix_lm)
  return LoadedModel(
    params=params,
    config=model,
    vocabulary=vocabulary,
    prefix_lm=prefix_lm,
    variant=variant,
    causal_pauses=data_lib.is_random_pause_variant(run_info.get('task')),
    sequence_length=run_info.get('sequence_length'),
    mesh=mesh,
    source=os.fspath(step_dir),
  )
