"""Downstream (finetuning / evaluation) tasks and their pause variants.

A downstream task is registered once as a *base* (source, text preprocessors giving
{"inputs", "targets"} strings, metrics). Its variants are derived from the base by name:

  {base}_std                      no pauses (StdFT)
  {base}_pause{M}                 M pauses appended to the prefix (PauseFT, Section 3.1)
  {base}_pause{M}_prepend         M pauses before the prefix (Section 5.3)
  {base}_filler{M}                M copies of '.' appended (Lanham et al. baseline, Section 4.3)

`_std`, `_pause10` and `_pause50` are registered up front (the paper's M); any other variant is
registered on first request by `register_pause_variant` (or from gin via `finetune_task`).
Features: prefix-LM ("inputs" bidirectional, pauses included; loss on "targets" only).
"""

import dataclasses
import re
from typing import Callable, Sequence

import gin
import seqio
from t5.evaluation import metrics as t5_metrics

from pause_lm import preprocessors
from pause_lm import synthetic
from pause_lm import vocab as vocab_lib
from pause_lm.tasks import registry

PAPER_NUM_PAUSES = (10, 50)
DEFAULT_FILLER = "."


@dataclasses.dataclass(frozen=True)
class DownstreamBase:
  name: str
  source: seqio.DataSource
  text_preprocessors: Sequence[Callable]
  vocabulary: seqio.Vocabulary
  target_length: int
  metric_fns: Sequence[Callable] = ()
  postprocess_fn: Callable | None = None


_BASES: dict[str, DownstreamBase] = {}
_TARGET_LENGTHS: dict[str, int] = {}


def variant_name(base: str, num_pauses: int, placement: str = "append",
                 filler: str | int | None = None) -> str:
  if num_pauses == 0:
    return f"{base}_std"
  kind = "pause" if filler is None else "filler"
  suffix = "" if placement == "append" else f"_{placement}"
  return f"{base}_{kind}{num_pauses}{suffix}"


def register_downstream_task(name: str, source: seqio.DataSource,
                             text_preprocessors: Sequence[Callable], vocabulary, *,
                             target_length: int, metric_fns: Sequence[Callable] = (),
                             postprocess_fn: Callable | None = None,
                             num_pauses: Sequence[int] = PAPER_NUM_PAUSES) -> None:
  """Registers a base downstream task and its `_std` and `_pause{M}` variants.

  `text_preprocessors` must turn source examples into {"inputs": str, "targets": str} (other
  keys pass through for metrics). `target_length` is the token budget of the answer; the
  prefix gets the rest of the sequence length.
  """
  if name in _BASES:
    raise ValueError(f"Downstream task {name!r} is already registered.")
  _BASES[name] = DownstreamBase(name, source, tuple(text_preprocessors), vocabulary,
                                target_length, tuple(metric_fns), postprocess_fn)
  register_pause_variant(name, 0)
  for m in num_pauses:
    register_pause_variant(name, m)


def register_pause_variant(base: str, num_pauses: int, placement: str = "append",
                           filler: str | int | None = None) -> str:
  """Registers (once) and returns the name of one variant of a registered base task."""
  if base not in _BASES:
    raise ValueError(f"No downstream base task {base!r}; registered: {sorted(_BASES)}. "
                     "Register it with pause_lm.tasks.register_downstream_task.")
  name = variant_name(base, num_pauses, placement, filler)
  if name in seqio.TaskRegistry.names():
    return name
  spec = _BASES[base]
  steps = list(spec.text_preprocessors) + [seqio.preprocessors.tokenize]
  if num_pauses:
    steps.append(preprocessors.with_args(
        preprocessors.append_pauses, num_pauses=num_pauses, placement=placement, filler=filler))
  steps.append(seqio.preprocessors.append_eos_after_trim)
  seqio.TaskRegistry.add(
      name,
      source=spec.source,
      preprocessors=steps,
      output_features={"inputs": seqio.Feature(spec.vocabulary, add_eos=False),
                       "targets": seqio.Feature(spec.vocabulary, add_eos=True)},
      metric_fns=list(spec.metric_fns),
      postprocess_fn=spec.postprocess_fn)
  _TARGET_LENGTHS[name] = spec.target_length
  return name


@gin.configurable
def finetune_task(base: str = gin.REQUIRED, num_pauses: int = 0, placement: str = "append",
                  filler: str | int | None = None) -> str:
  """Gin's way to ask for a variant: `TASK = @finetune_task()` with base/M/placement/filler."""
  return register_pause_variant(base, num_pauses, placement, filler)


_VARIANT = re.compile(r"^(?P<base>.+)_(?P<kind>pause|filler)(?P<m>\d+)(?:_(?P<placement>prepend|append))?$")


def _resolve_variant(name: str) -> bool:
  """Registers a variant from its name alone, e.g. `squad_pause5_prepend`, `gsm8k_filler10`."""
  match = _VARIANT.match(name)
  if not match or match["base"] not in _BASES:
    return False
  filler = DEFAULT_FILLER if match["kind"] == "filler" else None
  register_pause_variant(match["base"], int(match["m"]), match["placement"] or "append", filler)
  return True


registry.register_resolver(_resolve_variant)


def target_length(task_name: str) -> int | None:
  """Token budget of a downstream task's answer, or None for tasks registered elsewhere."""
  return _TARGET_LENGTHS.get(task_name)


def _strip(answer, example=None, is_target=False):
  del example, is_target
  return answer.strip()


def _register_synthetic():
  source = seqio.FunctionDataSource(
      synthetic.qa_dataset, splits=tuple(synthetic.NUM_DOCUMENTS),
      num_input_examples=dict(synthetic.NUM_DOCUMENTS))
  register_downstream_task(
      "synthetic_qa", source, text_preprocessors=[], vocabulary=vocab_lib.synthetic_vocabulary(),
      target_length=8, metric_fns=[t5_metrics.accuracy], postprocess_fn=_strip)


_register_synthetic()
