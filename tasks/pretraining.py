"""Pretraining tasks: `{c4,synthetic,synthetic_skills}_{std,pause}_pretrain`, and your own.

Documents are tokenized, closed with EOS, concatenated and cut into chunks of the sequence
length (T5's `reduce_concat_tokens` + `split_tokens_to_targets_length`); the pause variant then
injects pauses into each chunk (Algorithm 1). Both variants see the same chunks, so equal step
counts give equal token budgets, as in the paper.
"""

import functools

import gin
import seqio
from t5.data import preprocessors as t5_preprocessors

from pause_lm.data import preprocessors
from pause_lm.data import synthetic
from pause_lm.data import vocab as vocab_lib
from pause_lm.tasks import registry

C4_TFDS_NAME = 'c4/en:3.1.0'
PAUSE_RATE = 0.1


def _pretraining_preprocessors(pause: bool, rate: float, text_key: str = 'text'):
  rekey = (
    preprocessors.rekey_text
    if text_key == 'text'
    else preprocessors.with_args(preprocessors.rekey_text, key=text_key)
  )
  steps = [
    rekey,
    seqio.preprocessors.tokenize,
    seqio.preprocessors.append_eos,
    functools.partial(t5_preprocessors.reduce_concat_tokens, batch_size=128),
    t5_preprocessors.split_tokens_to_targets_length,
  ]
  if pause:
    steps.append(preprocessors.with_args(preprocessors.inject_pauses, rate=rate))
  return steps


def _register_variant(
  name: str,
  source: seqio.DataSource,
  vocabulary,
  *,
  pause: bool,
  rate: float = PAUSE_RATE,
  text_key: str = 'text',
) -> seqio.Task:
  """Registers one pretraining task over `source` (which yields {text_key: ...})."""
  return seqio.TaskRegistry.add(
    name,
    source=source,
    preprocessors=_pretraining_preprocessors(pause, rate, text_key),
    output_features={'targets': seqio.Feature(vocabulary, add_eos=True)},
    metric_fns=[],
  )


def register_pretraining_task(
  name: str,
  source: seqio.DataSource,
  vocabulary: vocab_lib.PauseVocabulary,
  *,
  text_key: str = 'text',
  rate: float = PAUSE_RATE,
) -> tuple[seqio.Task, seqio.Task]:
  """Registers `{name}_std_pretrain` and `{name}_pause_pretrain` over your own text.

  Both tokenize each document, close it with EOS, concatenate and chunk exactly as C4 does;
  the pause variant then injects pauses at `rate` (Algorithm 1), so the two see the same
  chunks. See docs/own_data.md.

  Args:
    name: the tasks' prefix.
    source: any seqio.DataSource whose examples hold a document's text under `text_key`:
      `pause_lm.tasks.text_files_source` / `jsonl_source` for local or cloud files, a
      `seqio.TfdsDataSource` for a TFDS text dataset.
    vocabulary: a PauseVocabulary, e.g. `pause_lm.hf.tokenizer.hf_vocabulary(path)`.
    text_key: the feature that holds the text ("text" for the file sources and most TFDS
      text datasets).
    rate: the share of each chunk that becomes pauses.

  Returns:
    The standard and the pause task.
  """
  if not isinstance(vocabulary, vocab_lib.PauseVocabulary):
    raise TypeError(
      f'register_pretraining_task({name!r}) needs a pause_lm.data.vocab.PauseVocabulary, not '
      f'{type(vocabulary).__name__}: wrap the tokenizer, e.g. '
      'pause_lm.hf.tokenizer.hf_vocabulary(path) or PauseVocabulary(your_vocabulary).'
    )
  return tuple(
    _register_variant(
      f'{name}_{variant}_pretrain', source, vocabulary, pause=pause, rate=rate, text_key=text_key
    )
    for variant, pause in (('std', False), ('pause', True))
  )


@gin.configurable
def c4_source(tfds_name: str = C4_TFDS_NAME, tfds_data_dir: str | None = None):
  """TFDS C4; `tfds_data_dir` (or the TFDS_DATA_DIR variable) points at prepared data.

  Read-only: C4 is an Apache Beam dataset that a training run must never try to build on the
  fly; an unprepared data dir is an error that says how to prepare it.
  """
  return seqio.TfdsDataSource(
    tfds_name=tfds_name,
    tfds_data_dir=tfds_data_dir,
    splits={'train': 'train', 'validation': 'validation'},
    read_only=True,
  )


def _register_c4(name: str, pause: bool):
  _register_variant(name, c4_source(), vocab_lib.c4_vocabulary(), pause=pause)


def _register_all():
  synthetic_source = seqio.FunctionDataSource(
    synthetic.pretraining_dataset,
    splits=tuple(synthetic.NUM_DOCUMENTS),
    num_input_examples=dict(synthetic.NUM_DOCUMENTS),
  )
  skills_source = seqio.FunctionDataSource(
    synthetic.skills_pretraining_dataset,
    splits=tuple(synthetic.NUM_DOCUMENTS),
    num_input_examples=dict(synthetic.NUM_DOCUMENTS),
  )
  for variant, pause in (('std', False), ('pause', True)):
    _register_variant(
      f'synthetic_{variant}_pretrain',
      synthetic_source,
      synthetic.synthetic_vocabulary(),
      pause=pause,
    )
    _register_variant(
      f'synthetic_skills_{variant}_pretrain',
      skills_source,
      synthetic.synthetic_vocabulary(),
      pause=pause,
    )
    # C4 waits for its first request, so gin bindings of its data dir and vocabulary apply.
    name = f'c4_{variant}_pretrain'
    registry.register_lazily(name, functools.partial(_register_c4, name, pause))


_register_all()
