"""Downstream (finetuning / evaluation) tasks and their pause variants.

A downstream task is declared once as a *base* (source, text preprocessors giving
{"inputs", "targets"} strings, metrics). Its variants are registered from the base by name:

  {base}_std                      no pauses (StdFT)
  {base}_pause{M}                 M pauses appended to the prefix (PauseFT, Section 3.1)
  {base}_pause{M}_prepend         M pauses before the prefix (Section 5.3)
  {base}_filler{M}                M copies of '.' appended (Lanham et al. baseline, Section 4.3)
  {base}_pause{lo}to{hi}          M drawn from lo..hi per example (delay-robust PauseFT;
                                  also _prepend and filler{lo}to{hi}, drawn uniformly)
  ..._eval                        scoring tasks only: every candidate, for rank classification

A variant is registered with seqio on its first request (`pause_lm.pipeline.datasets.get_task`,
or gin's `TASK = @finetune_task()`), so a base's vocabulary and data dirs can be set in gin files
that are parsed after this module is imported. `{base}_std`, `_pause10` and `_pause50` (the paper's
M) are listed up front; any other M, range, placement or filler works the same way. Names
are parsed and formatted by `pause_lm.data.variants`.
Features: prefix-LM ("inputs" bidirectional, pauses included; loss on "targets" only).
"""

import dataclasses
import functools
from typing import Callable, Sequence

import gin
import seqio
from t5.data import postprocessors as t5_postprocessors
from t5.data import preprocessors as t5_preprocessors
from t5.evaluation import metrics as t5_metrics
import tensorflow as tf

from pause_lm.data import preprocessors
from pause_lm.data import synthetic
from pause_lm.data import variants
from pause_lm.tasks import registry

PAPER_NUM_PAUSES = (10, 50)
DEFAULT_FILLER = '.'
EVAL_SUFFIX = '_eval'


@dataclasses.dataclass(frozen=True)
class DownstreamBase:
  name: str
  source: seqio.DataSource
  text_preprocessors: Sequence[Callable]
  vocabulary: seqio.Vocabulary
  target_length: int
  metric_fns: Sequence[Callable] = ()
  postprocess_fn: Callable | None = None
  # Scoring tasks: preprocessors that yield every candidate (the training form keeps the
  # correct one only). None for decoding tasks.
  eval_text_preprocessors: Sequence[Callable] | None = None

  @property
  def scoring(self) -> bool:
    return self.eval_text_preprocessors is not None


_BASES: dict[str, DownstreamBase] = {}
_DECLARED: dict[str, Callable[[], DownstreamBase]] = {}
_TARGET_LENGTHS: dict[str, int] = {}
_SCORING: set[str] = set()
# Functions that declare a base from its name alone if they know it (file tasks bound in gin:
# tasks/file_tasks.py), asked before a base is reported unknown.
_BASE_FINDERS: list[Callable[[str], object]] = []


def register_base_finder(find: Callable[[str], object]) -> None:
  _BASE_FINDERS.append(find)


def _is_declared(name: str) -> bool:
  """Whether `name` is a declared base, after asking the finders for it if it is not."""
  for find in _BASE_FINDERS:
    if name in _DECLARED:
      break
    find(name)
  return name in _DECLARED


def variant_name(
  base: str,
  num_pauses: int,
  placement: str = 'append',
  filler: str | int | None = None,
  max_pauses: int | None = None,
) -> str:
  return variants.Variant.make(num_pauses, placement, filler, max_pauses).task(base)


def declare_downstream_task(
  name: str, make_base: Callable[[], DownstreamBase], num_pauses: Sequence[int] = PAPER_NUM_PAUSES
) -> None:
  """Declares a base whose source/vocabulary are built on first use (after gin is parsed)."""
  if name in _DECLARED or name in _BASES:
    raise ValueError(f'Downstream task {name!r} is already registered.')
  _DECLARED[name] = make_base
  for m in (0, *num_pauses):
    variant = variant_name(name, m)
    registry.register_lazily(variant, lambda m=m: register_pause_variant(name, m))


def register_downstream_task(
  name: str,
  source: seqio.DataSource,
  text_preprocessors: Sequence[Callable],
  vocabulary,
  *,
  target_length: int,
  metric_fns: Sequence[Callable] = (),
  postprocess_fn: Callable | None = None,
  eval_text_preprocessors: Sequence[Callable] | None = None,
  num_pauses: Sequence[int] = PAPER_NUM_PAUSES,
) -> None:
  """Registers a base downstream task; its variants register on request.

  `text_preprocessors` must turn source examples into {"inputs": str, "targets": str} (other
  keys pass through for metrics and postprocessing). `target_length` is the token budget of
  the answer; the prefix and its pauses get the rest of the sequence length.
  """
  base = DownstreamBase(
    name,
    source,
    tuple(text_preprocessors),
    vocabulary,
    target_length,
    tuple(metric_fns),
    postprocess_fn,
    None if eval_text_preprocessors is None else tuple(eval_text_preprocessors),
  )
  declare_downstream_task(name, lambda: base, num_pauses)


def _base(name: str) -> DownstreamBase:
  if name not in _BASES:
    if not _is_declared(name):
      raise ValueError(
        f'No downstream base task {name!r}; registered: {sorted(_DECLARED)}. '
        'Register it with pause_lm.tasks.register_downstream_task.'
      )
    _BASES[name] = _DECLARED[name]()
  return _BASES[name]


def _add(name: str, spec: DownstreamBase, text_preprocessors, variant: variants.Variant, filler):
  steps = list(text_preprocessors) + [seqio.preprocessors.tokenize]
  if variant.kind != 'std':
    steps.append(
      preprocessors.with_args(preprocessors.append_pauses, variant=variant, filler=filler)
    )
  steps.append(seqio.preprocessors.append_eos_after_trim)
  seqio.TaskRegistry.add(
    name,
    source=spec.source,
    preprocessors=steps,
    output_features={
      'inputs': seqio.Feature(spec.vocabulary, add_eos=False),
      'targets': seqio.Feature(spec.vocabulary, add_eos=True),
    },
    metric_fns=list(spec.metric_fns),
    postprocess_fn=spec.postprocess_fn,
  )
  _TARGET_LENGTHS[name] = spec.target_length


def register_pause_variant(
  base: str,
  num_pauses: int,
  placement: str = 'append',
  filler: str | int | None = None,
  max_pauses: int | None = None,
) -> str:
  """Registers (once) and returns the name of one variant of a declared base task.

  With `max_pauses`, every example gets its own M from num_pauses..max_pauses
  (`preprocessors.num_pauses_of`).
  """
  spec = _base(base)
  variant = variants.Variant.make(num_pauses, placement, filler, max_pauses)
  name = variant.task(base)
  if name not in seqio.TaskRegistry.names():
    _add(name, spec, spec.text_preprocessors, variant, filler)
    if spec.scoring:
      _add(name + EVAL_SUFFIX, spec, spec.eval_text_preprocessors, variant, filler)
      _SCORING.add(name + EVAL_SUFFIX)
  return name


@gin.configurable
def finetune_task(
  base: str = gin.REQUIRED,
  num_pauses: int = 0,
  placement: str = 'append',
  filler: str | int | None = None,
  max_pauses: int | None = None,
) -> str:
  """Gin's way to ask for a variant: `TASK = @finetune_task()` with base/M/placement/filler
  (and max_pauses for M drawn from num_pauses..max_pauses per example)."""
  return register_pause_variant(base, num_pauses, placement, filler, max_pauses)


def eval_task_name(task_name: str) -> str:
  """The task to evaluate: the all-candidates form for scoring tasks, else the task itself."""
  registry.ensure_registered(task_name)
  candidate = task_name + EVAL_SUFFIX
  return candidate if candidate in _SCORING else task_name


def is_scoring(task_name: str) -> bool:
  return task_name in _SCORING


def target_length(task_name: str) -> int | None:
  """Token budget of a downstream task's answer, or None for tasks registered elsewhere."""
  return _TARGET_LENGTHS.get(task_name)


def _resolve_variant(name: str) -> bool:
  """Registers a variant from its name alone, e.g. `squad_pause5_prepend`, `gsm8k_filler10`,
  `squad_pause0to10`."""
  parsed = variants.parse_task(name.removesuffix(EVAL_SUFFIX))
  if parsed is None or not _is_declared(parsed[0]):
    return False
  base, variant = parsed
  filler = DEFAULT_FILLER if variant.kind == 'filler' else None
  register_pause_variant(base, variant.num_pauses, variant.placement, filler, variant.max_pauses)
  return True


registry.register_resolver(_resolve_variant)


def _strip(answer, example=None, is_target=False):
  del example, is_target
  return answer.strip()


def rank_classification(inputs_fn, targets_fn, is_correct_fn, mode: str):
  """t5's rank-classification preprocessor as a one-argument text preprocessor.

  mode 'train' keeps the correct candidate (the finetuning form); 'eval' yields every
  candidate, each scored by the model (`decoding.score`).
  """

  def preprocess(ds):
    return t5_preprocessors.rank_classification(ds, inputs_fn, targets_fn, is_correct_fn, mode=mode)

  preprocess.__name__ = f'rank_classification_{mode}'
  return preprocess


def _rank_candidates(mode):
  """Rank classification over synthetic.choice_example's four candidates."""
  return rank_classification(
    lambda ex: tf.fill([4], ex['inputs']),
    lambda ex: ex['candidates'],
    lambda ex: tf.one_hot(ex['label'], 4, on_value=True, off_value=False),
    mode,
  )


def rank_accuracy(targets, scores):
  return {'accuracy': t5_metrics.rank_classification(targets, scores)['accuracy']}


def _register_synthetic():
  """Offline downstream tasks: decoding (`synthetic_qa`, `_count`, `_pairs`, `_first`,
  `_repeated`, `_lookup`), scoring (`synthetic_choice`)."""
  splits = dict(
    splits=tuple(synthetic.NUM_DOCUMENTS), num_input_examples=dict(synthetic.NUM_DOCUMENTS)
  )
  vocabulary = synthetic.synthetic_vocabulary()
  register_downstream_task(
    'synthetic_qa',
    seqio.FunctionDataSource(synthetic.qa_dataset, **splits),
    text_preprocessors=[],
    vocabulary=vocabulary,
    target_length=8,
    metric_fns=[t5_metrics.accuracy],
    postprocess_fn=_strip,
  )
  for kind in ('count', 'pairs', 'first', 'repeated', 'lookup'):
    register_downstream_task(
      f'synthetic_{kind}',
      seqio.FunctionDataSource(functools.partial(synthetic.qa_dataset, kind=kind), **splits),
      text_preprocessors=[],
      vocabulary=vocabulary,
      target_length=4,
      metric_fns=[t5_metrics.accuracy],
      postprocess_fn=_strip,
    )
  register_downstream_task(
    'synthetic_choice',
    seqio.FunctionDataSource(synthetic.choice_dataset, **splits),
    text_preprocessors=[_rank_candidates('train')],
    vocabulary=vocabulary,
    target_length=32,
    eval_text_preprocessors=[_rank_candidates('eval')],
    metric_fns=[rank_accuracy],
    postprocess_fn=t5_postprocessors.rank_classification,
  )


_register_synthetic()
