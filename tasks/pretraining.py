"""Pretraining tasks: `{c4,synthetic,synthetic_skills}_{std,pause}_pretrain`.

Documents are tokenized, closed with EOS, concatenated and cut into chunks of the sequence
length (T5's `reduce_concat_tokens` + `split_tokens_to_targets_length`); the pause variant then
injects pauses into each chunk (Algorithm 1). Both variants see the same chunks, so equal step
counts give equal token budgets, as in the paper.
"""

import functools

import gin
import seqio
from t5.data import preprocessors as t5_preprocessors

from pause_lm import preprocessors
from pause_lm import synthetic
from pause_lm import vocab as vocab_lib
from pause_lm.tasks import registry

C4_TFDS_NAME = "c4/en:3.1.0"
PAUSE_RATE = 0.1


def _pretraining_preprocessors(pause: bool, rate: float):
  steps = [
      preprocessors.rekey_text,
      seqio.preprocessors.tokenize,
      seqio.preprocessors.append_eos,
      functools.partial(t5_preprocessors.reduce_concat_tokens, batch_size=128),
      t5_preprocessors.split_tokens_to_targets_length,
  ]
  if pause:
    steps.append(preprocessors.with_args(preprocessors.inject_pauses, rate=rate))
  return steps


def register_pretraining_task(name: str, source: seqio.DataSource, vocabulary, *, pause: bool,
                              rate: float = PAUSE_RATE) -> seqio.Task:
  """Registers one pretraining task over `source` (which yields {"text": ...})."""
  return seqio.TaskRegistry.add(
      name,
      source=source,
      preprocessors=_pretraining_preprocessors(pause, rate),
      output_features={"targets": seqio.Feature(vocabulary, add_eos=True)},
      metric_fns=[])


@gin.configurable
def c4_source(tfds_name: str = C4_TFDS_NAME, tfds_data_dir: str | None = None):
  """TFDS C4; `tfds_data_dir` (or the TFDS_DATA_DIR variable) points at prepared data.

  Read-only: C4 is an Apache Beam dataset that a training run must never try to build on the
  fly; an unprepared data dir is an error that says how to prepare it.
  """
  return seqio.TfdsDataSource(tfds_name=tfds_name, tfds_data_dir=tfds_data_dir,
                              splits={"train": "train", "validation": "validation"},
                              read_only=True)


def _register_c4(name: str, pause: bool):
  register_pretraining_task(name, c4_source(), vocab_lib.c4_vocabulary(), pause=pause)


def _register_all():
  synthetic_source = seqio.FunctionDataSource(
      synthetic.pretraining_dataset, splits=tuple(synthetic.NUM_DOCUMENTS),
      num_input_examples=dict(synthetic.NUM_DOCUMENTS))
  skills_source = seqio.FunctionDataSource(
      synthetic.skills_pretraining_dataset, splits=tuple(synthetic.NUM_DOCUMENTS),
      num_input_examples=dict(synthetic.NUM_DOCUMENTS))
  for variant, pause in (("std", False), ("pause", True)):
    register_pretraining_task(f"synthetic_{variant}_pretrain", synthetic_source,
                              vocab_lib.synthetic_vocabulary(), pause=pause)
    register_pretraining_task(f"synthetic_skills_{variant}_pretrain", skills_source,
                              vocab_lib.synthetic_vocabulary(), pause=pause)
    # C4 waits for its first request, so gin bindings of its data dir and vocabulary apply.
    name = f"c4_{variant}_pretrain"
    registry.register_lazily(name, functools.partial(_register_c4, name, pause))


_register_all()
