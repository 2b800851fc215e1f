"""The input pipeline: a registered SeqIO task in, batches of model features out.

One function (`get_dataset`) is what training and evaluation call; it picks the feature
converter from the task's features (decoder-only LM for pretraining, prefix-LM for downstream
tasks), so the loss weights always skip `<pause>` targets, and it turns seqio's and TFDS's
failures for unknown tasks and unprepared data into errors that say how to fix them.

Training reads a task through `TaskIterator`, which names the task when its input fails: an
input that ends (nothing to read: empty or whitespace-only files, a preprocessing that drops
everything) is an `EmptyInputError` listing what the task reads; an error raised inside
tf.data (a file that is not UTF-8, a JSONL line without its text) is raised again as its own
message, without TensorFlow's wrapping; and a batch that takes longer than
`InputWait.warn_after_seconds` is reported while it is awaited.
"""

import contextlib
import dataclasses
import difflib
import re
import threading
import time
from typing import Callable, Iterator, Mapping, NoReturn

from absl import logging
from clu.data import dataset_iterator as clu_iterator
import gin
import numpy as np
import seqio
import tensorflow as tf

from pause_lm.data import feature_converters
from pause_lm.data import preprocessors
from pause_lm import tasks as tasks_lib
from pause_lm.data import variants
from pause_lm.data import vocab as vocab_lib


class TaskNotRegisteredError(ValueError):
  pass


class DatasetNotPreparedError(RuntimeError):
  pass


class TooManyTruncationsError(ValueError):
  """More examples than allowed had their prefix cut to make room for pauses."""


class EmptyInputError(ValueError):
  """A repeating task's input ended: it has no example to give."""


class InputError(RuntimeError):
  """Reading a task's input failed inside tf.data; the message is the cause, unwrapped."""


@dataclasses.dataclass(frozen=True)
class TaskInfo:
  """What the model and trainer need to know about a task's token ids."""

  name: str
  pause_id: int
  vocab_size: int  # tokenizer + 1 pause
  num_embeddings: int  # vocab_size padded for aligned matmuls
  prefix_lm: bool
  eos_id: int
  target_length: int | None  # downstream tasks: the answer's token budget
  scoring: bool = False  # rank classification: one row per candidate answer
  # A random-M pause variant (`_pause{lo}to{hi}`), finetuned delay-robustly: its pauses are
  # outside the prefix-LM block and its rows teach the first answer token at every delay
  # (feature_converters.PausePrefixLMFeatureConverter).
  random_pauses: bool = False


def get_task(task_name: str) -> seqio.Task | seqio.Mixture:
  """The registered task or seqio Mixture, or an error that lists near names and the fix."""
  if task_name not in seqio.MixtureRegistry.names() and not tasks_lib.ensure_registered(task_name):
    known = [*tasks_lib.known_names(), *seqio.MixtureRegistry.names()]
    close = difflib.get_close_matches(task_name, known, n=5, cutoff=0.5)
    hint = f' Did you mean {", ".join(close)}?' if close else ''
    raise TaskNotRegisteredError(
      f'Task {task_name!r} is not registered (as a task or a seqio Mixture).{hint} Built-in '
      'tasks come with pause_lm.tasks; your own tasks and mixtures must be registered by a '
      'module that is imported first, e.g. a line `import my_project.my_tasks` in your gin '
      'file. Pause variants of downstream tasks are made on request: TASK = '
      '@finetune_task() with finetune_task.base/num_pauses.'
    )
  return seqio.get_mixture_or_task(task_name)


def _target_length(task: seqio.Task | seqio.Mixture) -> int | None:
  """A downstream task's answer budget; a mixture's is the longest of its tasks'."""
  if isinstance(task, seqio.Mixture):
    lengths = [tasks_lib.target_length(t.name) for t in task.tasks]
    return max((n for n in lengths if n is not None), default=None)
  return tasks_lib.target_length(task.name)


def eval_task_name(task_name: str) -> str:
  """The form of a task to evaluate: every candidate for scoring tasks, else the task."""
  get_task(task_name)
  return tasks_lib.eval_task_name(task_name)


def variant_num_pauses(task_name: str) -> int | None:
  """The M a downstream variant's name carries (a random-M one's largest); None for others."""
  parsed = variants.parse_task(task_name.removesuffix(tasks_lib.downstream.EVAL_SUFFIX))
  return None if parsed is None else parsed[1].largest


def inference_task(task: str, num_inference_pauses: int | None = None) -> str:
  """The task to evaluate: `task` with M_inf pauses instead of its own M, in eval form.

  Section 5.2 of the paper evaluates a model finetuned with M_ft pauses at other M_inf
  (down to 0): the same base task's variant with M_inf pauses, in the same placement and with
  the same filler, so only the number of delay tokens in the prefill changes.

  Args:
    task: A registered downstream task, e.g. 'squad_pause10'.
    num_inference_pauses: M_inf; None keeps the task's own M (a random-M task's largest:
      evaluation is always at one fixed M). The placement and filler stay those of `task`
      ('squad_pause10_prepend' at 5 is 'squad_pause5_prepend').

  Returns:
    The name of the registered task to evaluate (the all-candidates form for scoring tasks).
  """
  get_task(task)  # Fails with near names and how to register one.
  name = task.removesuffix(tasks_lib.downstream.EVAL_SUFFIX)
  parsed = variants.parse_task(name)
  if num_inference_pauses is None and parsed is not None and parsed[1].random:
    num_inference_pauses = parsed[1].largest  # Evaluation is at one fixed M.
  if num_inference_pauses is not None:
    if parsed is None:
      raise ValueError(
        f'NUM_INFERENCE_PAUSES needs a downstream pause variant such as squad_pause10, but '
        f'{task!r} is not one (pause_lm.tasks.register_downstream_task makes them). Leave '
        'NUM_INFERENCE_PAUSES unset to evaluate the task as it is.'
      )
    if num_inference_pauses < 0:
      raise ValueError(f'NUM_INFERENCE_PAUSES must be >= 0, got {num_inference_pauses}.')
    base, variant = parsed
    filler = tasks_lib.downstream.DEFAULT_FILLER if variant.kind == 'filler' else None
    name = tasks_lib.register_pause_variant(base, num_inference_pauses, variant.placement, filler)
  name = eval_task_name(name)
  if task_info(name).target_length is None:
    raise ValueError(
      f'{name!r} is not a downstream task (no answer length); evaluate '
      'downstream tasks, e.g. synthetic_qa_pause10 or squad_pause10.'
    )
  return name


def task_info(task_name: str) -> TaskInfo:
  task = get_task(task_name)
  vocabulary = task.output_features['targets'].vocabulary
  if not isinstance(vocabulary, vocab_lib.PauseVocabulary):
    raise ValueError(
      f'Task {task_name!r} uses {type(vocabulary).__name__}; pause_lm tasks need '
      'a pause_lm.data.vocab.PauseVocabulary so the model has a <pause> row.'
    )
  return TaskInfo(
    name=task_name,
    pause_id=vocabulary.pause_id,
    vocab_size=vocabulary.vocab_size,
    num_embeddings=vocab_lib.num_embeddings(vocabulary),
    prefix_lm='inputs' in task.output_features,
    eos_id=vocabulary.eos_id,
    target_length=_target_length(task),
    scoring=tasks_lib.is_scoring(task_name),
    random_pauses=is_random_pause_variant(task_name),
  )


def is_random_pause_variant(task_name: str | None) -> bool:
  """Whether a model finetuned on `task_name` was finetuned delay-robustly: a random-M
  variant with appended pauses (`squad_pause0to10`; not a prepended or filler one, not an
  `_eval` scoring form). Its pauses are outside the prefix-LM block in inference too
  (evaluation.TaskEvaluator's `causal_pauses`). Decided by the name, so a run's recorded task
  tells it without registering anything."""
  if not task_name or task_name.endswith(tasks_lib.downstream.EVAL_SUFFIX):
    return False
  try:
    parsed = variants.parse_task(task_name)
  except ValueError:
    return False
  if parsed is None:
    return False
  variant = parsed[1]
  return variant.kind == 'pause' and variant.random and variant.placement == 'append'


def task_feature_lengths(info: TaskInfo, sequence_length: int | Mapping[str, int]):
  """Splits one decoder length into seqio's per-feature lengths (prefix gets the rest)."""
  if isinstance(sequence_length, Mapping):
    return dict(sequence_length)
  if not info.prefix_lm:
    return {'targets': sequence_length}
  target = info.target_length or sequence_length // 4
  if target >= sequence_length:
    raise ValueError(
      f'Sequence length {sequence_length} leaves no room for the prefix of '
      f'{info.name!r}, whose answers take {target} tokens.'
    )
  return {'inputs': sequence_length - target, 'targets': target}


def feature_converter(info: TaskInfo, pack: bool = False) -> seqio.FeatureConverter:
  if info.prefix_lm:
    return feature_converters.PausePrefixLMFeatureConverter(
      pause_id=info.pause_id,
      pack=pack,
      causal_pauses=info.random_pauses,
      answer_at_every_delay=info.random_pauses,
    )
  return feature_converters.PauseLMFeatureConverter(pause_id=info.pause_id, pack=pack)


class _TruncationCounter:
  """Counts examples, and those whose prefix was cut for pauses, across a pipeline's life."""

  def __init__(self, task_name: str):
    self.task_name = task_name
    self.truncated = tf.Variable(0, dtype=tf.int64, trainable=False)
    self.examples = tf.Variable(0, dtype=tf.int64, trainable=False)

  def count(self, features):
    self.examples.assign_add(1)
    self.truncated.assign_add(tf.cast(features[preprocessors.TRUNCATED_KEY] > 0, tf.int64))
    return features

  def values(self) -> tuple[int, int]:
    """(truncated, examples) so far."""
    return int(self.truncated.numpy()), int(self.examples.numpy())


_TRUNCATIONS: dict[str, _TruncationCounter] = {}


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TruncationLimit:
  """When cutting prefixes for pauses stops a run.

  Attributes:
    max_fraction: Stop once more than this share of the examples seen had their prefix cut
      (every token cut is question the model never sees).
    min_examples: Judge only after this many examples, so one early long example does not
      stop a run.
  """

  max_fraction: float = 0.01
  min_examples: int = 200


def truncated_examples() -> dict[str, int]:
  """{task: examples whose prefix was cut for pauses so far}."""
  return {name: counter.values()[0] for name, counter in _TRUNCATIONS.items()}


def check_truncation(task_name: str, limit: 'TruncationLimit | None' = None) -> dict[str, float]:
  """Truncation metrics of `task_name`'s pipelines so far (empty if they cut nothing).

  Raises:
    TooManyTruncationsError: See `limit_truncation`.
  """
  if task_name not in _TRUNCATIONS:
    return {}
  truncated, examples = _TRUNCATIONS[task_name].values()
  limit_truncation(task_name, truncated, examples, limit)
  return {
    'truncated_examples': float(truncated),
    'truncated_fraction': truncated / max(examples, 1),
  }


def limit_truncation(
  task_name: str, truncated: int, examples: int, limit: 'TruncationLimit | None' = None
) -> None:
  """Raises TooManyTruncationsError if more than `limit.max_fraction` of at least
  `limit.min_examples` examples had their prefix cut (training and evaluation call it)."""
  limit = limit or TruncationLimit()
  fraction = truncated / max(examples, 1)
  if examples >= limit.min_examples and fraction > limit.max_fraction:
    raise TooManyTruncationsError(
      f'{task_name}: {truncated} of {examples} examples ({fraction:.1%}) had their prefix cut '
      f'to make room for the pauses, above TruncationLimit.max_fraction='
      f'{limit.max_fraction:g}. Raise SEQUENCE_LENGTH (the prefix gets SEQUENCE_LENGTH minus '
      "the answer's tokens, and the pauses take their M from that), use fewer pauses, or "
      'accept it with --gin.TruncationLimit.max_fraction=<share>.'
    )


def _raise_if_not_prepared(task_name: str, error: Exception):
  text = str(error)
  not_prepared = ('could not find data', 'has not been generated', 'not found in')
  if any(s in text.lower() for s in not_prepared) or 'DatasetNotFoundError' in type(error).__name__:
    raise DatasetNotPreparedError(
      f'The data of task {task_name!r} is not prepared: {text}\nPrepare it with TFDS '
      '(e.g. `tfds build c4/en:3.1.0 --data_dir=DIR`, or copy a prepared copy to DIR), then '
      'point at it with the TFDS_DATA_DIR environment variable or '
      "--gin.c4_source.tfds_data_dir=\"'DIR'\" (the builder's tfds_data_dir)."
    ) from error
  raise error


def get_dataset(
  task_name: str,
  split: str,
  *,
  sequence_length: int | Mapping[str, int],
  batch_size: int,
  shuffle: bool = True,
  seed: int | None = None,
  shard_id: int = 0,
  num_shards: int = 1,
  repeat: bool = True,
  pack: bool = False,
  drop_remainder: bool = True,
) -> tf.data.Dataset:
  """Batches of model features for this host's shard of `task_name`.

  `batch_size` is this host's share of the global batch. With `repeat=False` the last batch
  may be smaller unless `drop_remainder` (evaluation passes False to see every example).
  """
  info = task_info(task_name)
  task = get_task(task_name)
  if isinstance(task, seqio.Mixture):
    tasks_lib.registry.check_mixture_rates(task)  # However it was registered.
  lengths = task_feature_lengths(info, sequence_length)
  try:
    ds = task.get_dataset(
      sequence_length=lengths,
      split=split,
      shuffle=shuffle,
      seed=seed,
      shard_info=(
        seqio.ShardInfo(index=shard_id, num_shards=num_shards) if num_shards > 1 else None
      ),
      num_epochs=None if repeat else 1,
      use_cached=False,
    )
  except Exception as e:  # pylint: disable=broad-except
    _raise_if_not_prepared(task_name, e)
  if preprocessors.TRUNCATED_KEY in ds.element_spec:
    counter = _TRUNCATIONS.setdefault(task_name, _TruncationCounter(task_name))
    ds = ds.map(counter.count)
    # The counters' variables are state outside the pipeline; without this, saving the input
    # position in a checkpoint refuses the stateful op. A counter need not be restored.
    options = tf.data.Options()
    options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
    ds = ds.with_options(options)
  ds = feature_converter(info, pack)(ds, lengths)
  ds = ds.batch(batch_size, drop_remainder=drop_remainder or repeat)
  return ds.prefetch(tf.data.AUTOTUNE)


# How many of a source's files an error lists (then how many more there are).
_FILES_LISTED = 5


def _describe_files(files: list[str], sizes: bool) -> str:
  def named(path: str) -> str:
    if not sizes:
      return path
    try:
      return f'{path} ({tf.io.gfile.stat(path).length} bytes)'
    except tf.errors.OpError:
      return f'{path} (unreadable)'

  listed = ', '.join(named(f) for f in files[:_FILES_LISTED])
  more = f' and {len(files) - _FILES_LISTED} more' if len(files) > _FILES_LISTED else ''
  return f'{len(files)} file(s): {listed}{more}'


def _describe_source(task: seqio.Task, split: str, sizes: bool) -> str:
  """What one task reads, in words: its files (patterns, names, sizes), or its TFDS name."""
  source = task.source
  if isinstance(source, seqio.FileDataSource):
    patterns = getattr(source, 'patterns', None)
    kind = getattr(source, 'kind', 'input')
    matching = f' matching {patterns(split)}' if patterns else ''
    try:
      files = list(source.list_shards(split))
    except Exception as e:  # pylint: disable=broad-except
      return f'{kind} files{matching} (listing them failed: {e})'
    return f'{kind} files{matching}: {_describe_files(files, sizes)}'
  if isinstance(source, seqio.TfdsDataSource):
    return f'the TFDS dataset {source.tfds_dataset.name!r}'
  return f'a {type(source).__name__}'


def describe_input(task_name: str, split: str, sizes: bool = False) -> str:
  """What `task_name` (a task, or each task of a mixture) reads from `split`, for messages.

  With `sizes`, each listed file's size too (one stat per file: for errors only).
  """
  task = get_task(task_name)
  if not isinstance(task, seqio.Mixture):
    return f'it reads {_describe_source(task, split, sizes)}'
  parts = [f'{t.name!r} reads {_describe_source(t, split, sizes)}' for t in task.tasks]
  return 'its tasks: ' + '; '.join(parts)


def empty_input_message(task_name: str, split: str, batches: int) -> str:
  """Why a repeating input of `task_name` ended, what it reads, and what to do."""
  reads = describe_input(task_name, split, sizes=True)
  when = 'before its first batch' if not batches else f'after {batches} batch(es) in this process'
  kind = 'Mixture' if task_name in seqio.MixtureRegistry.names() else 'Task'
  mixture = (
    ' A mixture stops as soon as any one of its tasks has no example.' if kind == 'Mixture' else ''
  )
  return (
    f'{kind} {task_name!r} has no examples in split {split!r}: its input ended {when}, '
    f'although it repeats. {reads[:1].upper()}{reads[1:]}.{mixture} Every '
    'document read was empty or whitespace-only (or a JSONL text field was), or the '
    "task's preprocessing dropped every example. Put text in the files, or point the pattern "
    'at the ones that hold it.'
  )


# A Python exception raised inside tf.data, as TensorFlow quotes it in its own error:
# "...::Map: ValueError: <message>\nTraceback (most recent call last):...".
_PYTHON_ERROR = re.compile(
  r'(?:^|[\s:])((?:\w+\.)*([A-Za-z_]\w*(?:Error|Exception))): (.*?)\nTraceback \(most recent',
  re.DOTALL,
)
# TensorFlow's additions around a message: its function and node names, the op.
_TF_NOISE = re.compile(
  r'\{\{function_node [^}]*\}\}\s*|\s*\[\[\{\{node [^}]*\}\}\]\]|\s*\[Op:\w+\].*$'
)


def input_error(task_name: str, error: tf.errors.OpError) -> Exception:
  """The error to raise for `error` from `task_name`'s pipeline: a source's DataSourceError
  as itself, another Python error or a TensorFlow error as an InputError with its message."""
  text = error.message
  python_error = _PYTHON_ERROR.search(text)
  if python_error:
    qualified, name, message = python_error.groups()
    message = message.strip()
    if name == tasks_lib.text_sources.DataSourceError.__name__:
      return tasks_lib.text_sources.DataSourceError(message)
    return InputError(f'Reading the input of task {task_name!r} failed: {qualified}: {message}')
  # What is left after TensorFlow's "Error in ... transformation with iterator: Iterator::...:".
  message = re.sub(r'^.*? with iterator: \S+: ', '', _TF_NOISE.sub('', text).strip())
  return InputError(
    f'Reading the input of task {task_name!r} failed: {type(error).__name__}: {message}'
  )


@gin.configurable
@dataclasses.dataclass(frozen=True)
class InputWait:
  """When waiting for a batch is reported.

  Attributes:
    warn_after_seconds: While no batch has come for this long, a warning names the task and
      what it reads; again each time as long again passes. Training keeps waiting (a slow
      source may recover); a source that blocks (an unreachable bucket, a stalled network
      disk, a named pipe nobody writes) or drops nearly every example shows this. None or 0:
      never warn.
  """

  warn_after_seconds: float | None = 120.0


@contextlib.contextmanager
def _warn_while_waiting(seconds: float | None, message: Callable[[float], str]) -> Iterator[None]:
  """Logs `message(seconds waited)` every `seconds` until the block ends, from a thread of its
  own (the waiting thread is inside tf.data and cannot)."""
  if not seconds:
    yield
    return
  done = threading.Event()
  start = time.monotonic()

  def watch():
    while not done.wait(seconds):
      logging.warning('%s', message(time.monotonic() - start))

  threading.Thread(target=watch, name='input-wait', daemon=True).start()
  try:
    yield
  finally:
    done.set()


class TaskIterator(clu_iterator.TfDatasetIterator):
  """A task's repeating batches (`get_dataset(..., repeat=True)`), checkpointable as clu's
  TfDatasetIterator (the same saved position), whose failures name the task.

  - The input ending is an EmptyInputError naming the task, its patterns and files: a
    repeating input ends only when a whole pass over it gave no example (tf.data stops a
    repeat whose pass is empty), so it never loops forever on an empty corpus, and is found
    at the first batch without reading a real corpus up front.
  - An error raised inside tf.data is raised again as its own message (`input_error`).
  - A batch awaited longer than `InputWait.warn_after_seconds` is reported while it is.
  """

  def __init__(
    self,
    dataset: tf.data.Dataset,
    task_name: str,
    split: str = 'train',
    *,
    checkpoint: bool = True,
    wait: InputWait | None = None,
  ):
    super().__init__(dataset, checkpoint=checkpoint)
    self._task_name, self._split = task_name, split
    self._wait = wait or InputWait()
    self._batches = 0
    self._failure: Exception | None = None
    # Now, not while waiting: listing files can itself be what blocks.
    self._reads = describe_input(task_name, split)

  def _waiting(self, seconds: float) -> str:
    which = 'first batch' if not self._batches else f'batch {self._batches + 1}'
    return (
      f'Still waiting for the {which} of task {self._task_name!r} after {seconds:.0f} s; '
      f'{self._reads}. A source that blocks (an unreachable bucket, a stalled network disk, '
      'a named pipe nobody writes) or whose preprocessing drops nearly every example shows '
      'this; training goes on when the batch comes. (Reported every '
      f'InputWait.warn_after_seconds={self._wait.warn_after_seconds:g}.)'
    )

  def __next__(self) -> dict[str, np.ndarray]:
    if self._failure is not None:
      raise self._failure
    with _warn_while_waiting(self._wait.warn_after_seconds, self._waiting):
      try:
        batch = super().__next__()
      except StopIteration:
        self._fail(
          EmptyInputError(empty_input_message(self._task_name, self._split, self._batches))
        )
      except tf.errors.OpError as error:
        self._fail(input_error(self._task_name, error), error)
    self._batches += 1
    return batch

  def _fail(self, failure: Exception, cause: Exception | None = None) -> NoReturn:
    """Raises `failure`, for this call and every later one, after dropping the tf.data
    iterator: its threads would go on reading ahead, failing again and logging each failure
    with its traceback."""
    self.iterator = self._ckpt = None
    self._failure = failure
    raise failure from cause
