"""Tasks registered on first request, so that gin bindings parsed after import still apply.

seqio registers tasks when their module is imported, but `python -m pause_lm.train` imports
modules before it parses gin files. A task whose source or vocabulary is gin-configurable (C4's
data dir and SentencePiece path) or made on demand (pause variants) registers through here.
"""

from typing import Callable

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
