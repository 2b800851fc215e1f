"""Evaluation of parameters on a downstream task, at any inference-time number of pauses.

Used by `python -m pause_lm.evaluate` (a checkpoint) and by finetuning runs (every
EVAL_EVERY_STEPS steps). Section 5.2 of the paper evaluates a model finetuned with M_ft pauses
at other M_inf (down to 0): the task evaluated is then the same base task's variant with M_inf
pauses, in the same placement and with the same filler, so only the number of delay tokens in
the prefill changes.

The metrics path is seqio's own `seqio.Evaluator`: it caches the task's examples, runs our
`predict_fn` (KV-cache greedy decoding, `decoding.generate`, up to the task's target length) or
`score_fn` (`decoding.score`, the log-likelihood of every candidate, for rank classification),
then decodes, postprocesses and applies the task's metric fns exactly as it does for T5X. A
seqio logger keeps what it computed, which becomes `predictions.jsonl`.

Batches are padded to a fixed batch size and a fixed prefix width (the task's "inputs" length),
so every batch runs the same compiled program and a row's result does not depend on which
rows share its batch: results are identical across batch sizes.
"""

from collections.abc import Callable, Mapping
import dataclasses
import functools
import math
from typing import Any

from absl import logging
from etils import epath

import gin
import jax
import jax.numpy as jnp
import numpy as np
import seqio
import tqdm

from pause_lm.checkpointing import step_folder
from pause_lm.checkpointing import verified_read
from pause_lm.checkpointing import warm_start
from pause_lm.pipeline import datasets as data_lib
from pause_lm.model import decoding
from pause_lm.model import sizing
from pause_lm.runtime import eval_results
from pause_lm.runtime import run_dir
from pause_lm.model import transformer as model_lib
from pause_lm.data import preprocessors
from pause_lm.runtime import sharding

# seqio insists on an output folder for any logger; ours keeps its records in memory.
_IN_MEMORY = 'in-memory'


class _Recorder(seqio.Logger):
  """Keeps what seqio.Evaluator computed (inferences, postprocessed targets) for the records."""

  def __init__(self, output_dir: str):
    super().__init__(output_dir)
    self.last: dict[str, Any] = {}

  def __call__(self, task_name, step, metrics, dataset, inferences, targets):
    del task_name, step, metrics
    self.last = {'dataset': dataset, 'inferences': inferences, 'targets': targets}


class TaskEvaluator:
  """Evaluates parameters on one task's split; built once, called at every evaluation."""

  def __init__(
    self,
    task: str,
    config: model_lib.ModelConfig,
    *,
    sequence_length: int,
    split: str = 'validation',
    num_examples: int | None = None,
    batch_size: int = 32,
    progress: bool = True,
    causal_pauses: bool = False,
  ):
    """Caches the task's examples (seqio.Evaluator) and sizes the programs.

    Args:
      task: The registered task to evaluate as it is (see `data.inference_task`).
      config: The model's config (its max_len must hold the sequence length).
      sequence_length: Prefix + pauses + answer, as in finetuning; the answer gets the task's
        target length and the prefix the rest.
      split: The split to evaluate.
      num_examples: Evaluate only the first this many examples (all candidates of each, for
        scoring tasks); None for all.
      batch_size: Rows per model call; does not change any result.
      progress: Show a progress bar.
      causal_pauses: The model was finetuned delay-robustly (on a random-M variant): its
        pauses are outside the prefix-LM block, in decoding and scoring as in its training
        rows (`data.is_random_pause_variant` of the task it was finetuned on).
    """
    self.task = task
    self.causal_pauses = causal_pauses
    self.config = config
    self.info = data_lib.task_info(task)
    self.scoring = self.info.scoring
    self.batch_size = batch_size
    self.progress = progress
    self.num_pauses = data_lib.variant_num_pauses(task)
    self.lengths = data_lib.task_feature_lengths(self.info, sequence_length)
    if sum(self.lengths.values()) > config.max_len:
      raise ValueError(
        f"Sequence length {sum(self.lengths.values())} exceeds the model's "
        f'max_len={config.max_len}; lower SEQUENCE_LENGTH.'
      )
    rows = num_examples
    if num_examples is not None and self.scoring:
      rows = self._candidate_rows(split, num_examples)
    self._evaluator = seqio.Evaluator(
      task,
      # Scored rows as they are: never the training rows' extra answer targets.
      data_lib.feature_converter(dataclasses.replace(self.info, random_pauses=False)),
      eval_split=split,
      sequence_length=self.lengths,
      num_examples=rows,
      shuffle=False,
      logger_cls=(_Recorder,),
      log_dir=_IN_MEMORY,
      async_compute_metrics=False,
    )
    self.examples = list(self._evaluator.cached_task_datasets[task].as_numpy_iterator())
    self.num_examples = (
      len({int(ex['idx'][0]) for ex in self.examples}) if self.scoring else len(self.examples)
    )
    if progress:
      logging.info('%s', self.describe(split))
    self.truncated_prefixes = sum(
      int(ex.get(preprocessors.TRUNCATED_KEY, 0) > 0) for ex in self.examples
    )
    if self.truncated_prefixes:
      logging.warning(
        '%s: %d examples had their prefix cut to make room for the pauses.',
        task,
        self.truncated_prefixes,
      )
    data_lib.limit_truncation(task, self.truncated_prefixes, len(self.examples))

  def describe(self, split: str) -> str:
    """What will be evaluated: how many examples of how many, in how many batches."""
    available = data_lib.get_task(self.task).num_input_examples(split)
    of = f' of {available:,}' if available else ''
    rows = f' ({len(self.examples):,} candidate rows)' if self.scoring else ''
    batches = math.ceil(len(self.examples) / self.batch_size)
    return (
      f'Evaluating {self.task} on {self.num_examples:,}{of} {split} examples{rows}, '
      f'{batches:,} batches of {self.batch_size} (set how many with '
      '--gin.NUM_EXAMPLES; None for the whole split).'
    )

  def _candidate_rows(self, split: str, num_examples: int) -> int:
    """Rows of a rank-classification task that hold the first `num_examples` examples."""
    dataset = data_lib.get_task(self.task).get_dataset(
      self.lengths, split=split, shuffle=False, num_epochs=1
    )
    rows = 0
    for ex in dataset.as_numpy_iterator():
      if int(ex['idx'][0]) >= num_examples:
        break
      rows += 1
    return rows

  def _batches(self, dataset):
    """(indices, padded numpy features, real rows) of fixed-size batches, with progress."""
    total = math.ceil(int(dataset.cardinality()) / self.batch_size)
    batches = dataset.batch(self.batch_size).as_numpy_iterator()
    for indices, features in tqdm.tqdm(
      batches, total=total, desc=self.task, unit='batch', disable=not self.progress, mininterval=2.0
    ):
      real = len(indices)
      padded = {
        k: np.pad(v, [(0, self.batch_size - real)] + [(0, 0)] * (v.ndim - 1))
        for k, v in features.items()
      }
      yield indices, padded, real

  def prefill_inputs(self, features: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The prefixes (pauses included, without BOS) and their lengths, at a fixed width.

    Prefix-LM features hold `[prefix, answer]`; the causal-attention mask covers BOS and the
    prefix, so the prefix is its first sum(mask) - 1 target tokens.
    """
    width = self.lengths['inputs']
    lengths = features['decoder_causal_attention'].sum(axis=1).astype(np.int32) - 1
    lengths = np.maximum(lengths, 0)
    tokens = features['decoder_target_tokens'][:, :width]
    prefixes = np.where(np.arange(width)[None, :] < lengths[:, None], tokens, 0)
    return prefixes.astype(np.int32), lengths

  def predict_fn(self, params) -> Callable[..., list[tuple[int, list[int]]]]:
    """seqio's predict_fn: greedy KV-cache decoding of up to the task's target length."""

    def predict(dataset, model_feature_shapes=None):
      del model_feature_shapes
      results = []
      for indices, features, real in self._batches(dataset):
        prefixes, lengths = self.prefill_inputs(features)
        tokens = decoding.generate(
          params,
          self.config,
          jnp.asarray(prefixes),
          jnp.asarray(lengths),
          max_decode_len=self.lengths['targets'],
          prefix_lm=self.info.prefix_lm,
          eos_id=self.info.eos_id,
          # The pause and the alignment rows follow the tokenizer's ids: never produce them.
          vocab_limit=self.info.pause_id,
          causal_pause_id=self._causal_pause_id,
        ).tokens
        # Fixed-width rows, 0 after EOS, as T5X returns them (seqio builds one array of all
        # of them, and its vocabulary's decode stops at EOS).
        tokens = np.asarray(tokens)
        results.extend((int(i), tokens[r].tolist()) for r, i in enumerate(indices[:real]))
      return results

    return predict

  def score_fn(self, params) -> Callable[..., list[tuple[int, float]]]:
    """seqio's score_fn: the summed log-likelihood of each row's target (one candidate)."""

    def score(dataset, model_feature_shapes=None):
      del model_feature_shapes
      results = []
      for indices, features, real in self._batches(dataset):
        if self._causal_pause_id is not None:
          features = dict(features)
          not_pause = features['decoder_input_tokens'] != self._causal_pause_id
          features['decoder_causal_attention'] = features['decoder_causal_attention'] * not_pause
        sums, _ = decoding.score(
          params, self.config, {k: jnp.asarray(v) for k, v in features.items()}
        )
        sums = np.asarray(sums)
        results.extend((int(i), float(sums[r])) for r, i in enumerate(indices[:real]))
      return results

    return score

  @property
  def _causal_pause_id(self) -> int | None:
    return self.info.pause_id if self.causal_pauses and self.info.prefix_lm else None

  def __call__(self, params, step: int | None = None) -> eval_results.EvalResult:
    return self.evaluate_with(self.predict_fn(params), self.score_fn(params), step)

  def evaluate_with(self, predict_fn, score_fn, step: int | None = None) -> eval_results.EvalResult:
    """Runs seqio's decode, postprocess and metric path on these model functions' outputs."""
    metrics, _ = self._evaluator.evaluate(
      compute_metrics=True, step=step, predict_fn=predict_fn, score_fn=score_fn
    )
    task_metrics = {k: float(v) for k, v in metrics.result()[self.task].items()}
    recorded = self._evaluator.loggers[0].last
    records = self._score_records(recorded) if self.scoring else self._predict_records(recorded)
    return eval_results.EvalResult(
      task=self.task,
      num_pauses=self.num_pauses,
      num_examples=len(records),
      truncated_prefixes=self.truncated_prefixes,
      metrics=task_metrics,
      records=records,
    )

  def _prefix_text(self, ex) -> str:
    """The prefix the model saw: its text with every pause shown, where it was placed."""
    return self._vocabulary.decode([int(t) for t in ex['inputs']])

  @functools.cached_property
  def _vocabulary(self) -> seqio.Vocabulary:
    return data_lib.get_task(self.task).output_features['inputs'].vocabulary

  def _predict_records(self, recorded) -> list[dict[str, Any]]:
    inferences, targets = recorded['inferences'], recorded['targets']
    return [
      {
        'index': i,
        'prefix': self._prefix_text(ex),
        'num_pauses': self.num_pauses,
        'output': eval_results.jsonable(inferences['output'][i]),
        'prediction': eval_results.jsonable(inferences['prediction'][i]),
        'target': eval_results.jsonable(targets[i]),
      }
      for i, ex in enumerate(self.examples)
    ]

  def _score_records(self, recorded) -> list[dict[str, Any]]:
    """One record per example: every candidate, its score, the best one and the correct ones."""
    scores = recorded['inferences']['score']
    grouped: dict[int, dict[str, Any]] = {}
    for ex, score in zip(self.examples, scores):
      example = int(ex['idx'][0])
      record = grouped.setdefault(
        example,
        {
          'index': example,
          'prefix': self._prefix_text(ex),
          'num_pauses': self.num_pauses,
          'candidates': [],
          'scores': [],
          'target': [],
        },
      )
      candidate = eval_results.jsonable(ex['targets_pretokenized'])
      record['candidates'].append(candidate)
      record['scores'].append(float(score))
      if ex['is_correct']:
        record['target'].append(candidate)
    for record in grouped.values():
      record['prediction'] = record['candidates'][int(np.argmax(record['scores']))]
    return list(grouped.values())


def _finetuned_sequence_length(step_dir: epath.Path) -> int:
  """The sequence length the step's run trained with (evaluation defaults to it)."""
  run_info = step_folder.read_run_info(step_dir)
  if 'sequence_length' not in run_info:
    raise ValueError(
      f'{step_dir} does not record its sequence length; set '
      '--gin.SEQUENCE_LENGTH to the one it was finetuned with.'
    )
  return int(run_info['sequence_length'])


def load_params(
  checkpoint_path: epath.PathLike, config: model_lib.ModelConfig, mesh: jax.sharding.Mesh
):
  """The checkpoint's parameters, sharded over `mesh` as in training, verified against their
  checksums (a damaged step is refused; a run's folder falls back to its newest intact step)."""
  return warm_start.load_params(checkpoint_path, _abstract_params(config, mesh))


def _abstract_params(config: model_lib.ModelConfig, mesh: jax.sharding.Mesh):
  """The parameters' shapes, dtypes and shardings over `mesh`, as training shards them."""
  return sizing.sharded_abstract_params(
    model_lib.Decoder(config), mesh, sharding.logical_axis_rules()
  )[0]


@gin.configurable
def evaluate(
  checkpoint_path: str = gin.REQUIRED,
  task: str = gin.REQUIRED,
  num_inference_pauses: int | None = None,
  sequence_length: int | None = None,
  split: str = 'validation',
  num_examples: int | None = None,
  batch_size: int = 32,
  output_dir: str | None = None,
  model: model_lib.ModelConfig = gin.REQUIRED,
  mesh: jax.sharding.Mesh = gin.REQUIRED,
) -> eval_results.EvalResult:
  """Evaluates a checkpoint and writes metrics.json and predictions.jsonl.

  Args:
    checkpoint_path: A MODEL_DIR, its checkpoints/ folder, or one step folder.
    task: The task (usually the one finetuned on, e.g. 'squad_pause10').
    num_inference_pauses: M_inf; None evaluates at the task's own M.
    sequence_length: Tokens of prefix + pauses + answer; None takes the finetuning run's.
    split: Split to evaluate.
    num_examples: Evaluate only the first this many examples; None for all.
    batch_size: Rows per model call (results do not depend on it).
    output_dir: Where the files go; None puts them in the run's folder, in
      `MODEL_DIR/eval/step_{N}/{task}`, where checkpoint rotation cannot delete them.
    model: The checkpoint's model (`evaluate.model = @ModelConfig()` in gin/evaluate.gin);
      an unset `num_embeddings` is sized from the task, as in training.
    mesh: The device mesh the parameters are sharded over (`sharding.create_mesh`).

  Returns:
    The metrics and per-example records.
  """
  if not epath.Path(checkpoint_path).exists():
    raise FileNotFoundError(
      f'CHECKPOINT_PATH={checkpoint_path!r} does not exist: give a finetuning MODEL_DIR, its '
      'checkpoints/ folder or one step folder in it.'
    )
  try:
    candidates = step_folder.candidate_steps(checkpoint_path)
  except FileNotFoundError as e:
    raise FileNotFoundError(
      f'CHECKPOINT_PATH={checkpoint_path!r} holds no checkpoint: give a finetuning MODEL_DIR, '
      'its checkpoints/ folder or one step folder in it.'
    ) from e
  name = data_lib.inference_task(task, num_inference_pauses)
  # Checked before any work: an evaluation must not run for an hour to find it cannot write.
  results_root = run_dir.ensure_writable_folder(
    output_dir or eval_results.run_eval_dir(candidates[0]), 'EVAL_OUTPUT_DIR'
  )

  def read(step_dir):
    length = sequence_length or _finetuned_sequence_length(step_dir)
    config = sizing.model_config_for_task(model, data_lib.task_info(name), length)
    return length, config, warm_start.load_step_params(step_dir, _abstract_params(config, mesh))

  step_dir, (sequence_length, config, params) = verified_read.read_newest_intact(
    checkpoint_path, read
  )
  run_info = step_folder.read_run_info(step_dir)
  causal_pauses = data_lib.is_random_pause_variant(run_info.get('task'))
  evaluator = TaskEvaluator(
    name,
    config,
    sequence_length=sequence_length,
    split=split,
    num_examples=num_examples,
    batch_size=batch_size,
    causal_pauses=causal_pauses,
  )
  with jax.set_mesh(mesh):
    result = evaluator(params, step=int(step_dir.name))
  output_dir = output_dir or results_root / f'step_{step_dir.name}' / name
  eval_results.write_results(
    output_dir,
    result,
    {
      'requested_task': task,
      'checkpoint': str(step_dir),
      'step': int(step_dir.name),
      'finetuned_on': run_info.get('task'),
      'causal_pauses': causal_pauses,
      'split': split,
      'sequence_length': sequence_length,
    },
  )
  if not step_dir.exists():
    logging.warning(
      'Checkpoint step %s was deleted after it was read (its run keeps only its newest '
      'steps); the results, from the verified parameters, are in %s.',
      step_dir,
      output_dir,
    )
  logging.info(
    '%s at step %s with %s pauses: %s (written to %s)',
    name,
    step_dir.name,
    result.num_pauses,
    result.metrics,
    output_dir,
  )
  return result


@gin.configurable(denylist=['task', 'config', 'sequence_length', 'model_dir'])
def periodic_evaluator(
  task: str,
  config: model_lib.ModelConfig,
  sequence_length: int,
  model_dir: str,
  num_examples: int | None = 500,
  batch_size: int = 32,
  split: str = 'validation',
  write_predictions: bool = True,
) -> Callable[[Any, int], dict[str, float]]:
  """The evaluation a finetuning run does every EVAL_EVERY_STEPS steps.

  Args:
    task: The task trained on; evaluated at its own M (all candidates if scoring).
    config: The model's config.
    sequence_length: The training sequence length.
    model_dir: The run's folder; evaluation files go to `model_dir/eval/step_{step}`.
    num_examples: Examples per evaluation (the first ones of the split, every time).
    batch_size: Rows per model call.
    split: Split to evaluate.
    write_predictions: Also write metrics.json and predictions.jsonl at every evaluation.

  Returns:
    A function of (params, step) to scalars named `eval/{metric}`, for the metric writer.
  """
  evaluator = TaskEvaluator(
    data_lib.inference_task(task),
    config,
    sequence_length=sequence_length,
    split=split,
    num_examples=num_examples,
    batch_size=batch_size,
    progress=False,
    causal_pauses=data_lib.is_random_pause_variant(task),
  )

  def run(params, step: int) -> dict[str, float]:
    result = evaluator(params, step=step)
    if write_predictions and jax.process_index() == 0:
      eval_results.write_results(
        epath.Path(model_dir) / 'eval' / f'step_{step}', result, {'step': step}
      )
    logging.info('Evaluation at step %d on %s: %s', step, result.task, result.metrics)
    return {f'eval/{k}': v for k, v in result.metrics.items()}

  return run
