"""Tasks registered on first request, so that gin bindings parsed after import still apply.

seqio registers tasks when their module is imported, but `python -m pause_lm.train` imports
modules before it parses gin files. A task whose source or vocabulary is gin-configurable (C4's
data dir and SentencePiece path) or made on demand (pause variants) registers through here.

Mixtures register through `register_mixture`, which refuses rates that cannot be sampled
(seqio's own `MixtureRegistry.add` accepts any); the input pipeline checks every mixture's
rates again before reading (`check_mixture_rates`), however it was registered.
"""

import math
import numbers
from typing import Any, Callable, Sequence

import seqio

_LAZY: dict[str, Callable[[], object]] = {}
# Functions that register a task from its name alone (e.g. "squad_pause5"), or return False.
_RESOLVERS: list[Callable[[str], bool]] = []


def register_lazily(name: str, register: Callable[[], object]) -> None:
  _LAZY[name] = register


def register_resolver(resolve: Callable[[str], bool]) -> None:
  _RESOLVERS.append(resolve)


def ensure_registered(name: str) -> bool:
  """Registers `name` if it is a lazy or resolvable task; returns whether seqio knows it."""
  if name in seqio.TaskRegistry.names():
    return True
  if name in _LAZY:
    _LAZY[name]()
  else:
    any(resolve(name) for resolve in _RESOLVERS)
  return name in seqio.TaskRegistry.names()


def known_names() -> list[str]:
  return sorted(set(seqio.TaskRegistry.names()) | set(_LAZY))


def check_mixture_rates(mixture: seqio.Mixture) -> None:
  """Raises ValueError unless every rate of `mixture` is a finite number >= 0 and their sum
  is > 0: tf.data samples a negative rate as if it were a weight, and rates that are all 0 give
  no example at all (the run would stop at its first batch with a bare StopIteration).

  Rate functions (seqio.mixing_rate_num_examples, ...) are called, as seqio calls them to
  sample.
  """
  rates = {task.name: mixture.get_rate(task) for task in mixture.tasks}
  for name, rate in rates.items():
    if not isinstance(rate, numbers.Real) or not math.isfinite(rate) or rate < 0:
      raise ValueError(
        f'Mixture {mixture.name!r}: the rate of task {name!r} is {rate!r}; rates are relative '
        'numbers of examples, finite and >= 0 (0 leaves a task out). Fix the rate in the '
        'mixture.'
      )
  if not sum(rates.values()) > 0:
    raise ValueError(
      f'Mixture {mixture.name!r}: every rate is 0 ({rates}), so it has no example to give. '
      'Give at least one task a rate > 0.'
    )


def register_mixture(name: str, tasks: Sequence[Any], **kwargs) -> seqio.Mixture:
  """`seqio.MixtureRegistry.add(name, tasks, **kwargs)`, refusing rates that cannot be sampled.

  Args:
    name: the mixture's name (what TASK names).
    tasks: as for seqio: [(task or name, rate), ...] (or names with `default_rate=`).
    **kwargs: seqio.MixtureRegistry.add's other arguments (`default_rate`, `sample_fn`).

  Returns:
    The registered mixture.

  Raises:
    ValueError: a rate is negative, not finite or not a number, or all are 0
      (`check_mixture_rates`); nothing is registered then.
  """
  check_mixture_rates(seqio.Mixture(name, tasks, **kwargs))
  return seqio.MixtureRegistry.add(name, tasks, **kwargs)
