"""Names of pause variants, parsed and formatted in one place.

A downstream task's variant says how many delay tokens go where, and its name says the same:

  {base}_std                       no pauses (StdFT)
  {base}_pause{M}[_prepend]        M pauses after (or before) the prefix (PauseFT)
  {base}_pause{lo}to{hi}[_prepend] M drawn from lo..hi (inclusive) per example (appended: hi
                                   for half of them; see preprocessors.num_pauses_of)
  {base}_filler{M}, _filler{lo}to{hi}  '.' fillers instead of pauses (Lanham et al.)

An experiment grid names its finetuning folders after the same variant (`stdft`, `pauseft10`,
`pauseft0to10_prepend`, `fillerft5`). Task registration (pause_lm.tasks.downstream),
evaluation and the grid all parse and format names here, so they cannot disagree. No
TensorFlow or JAX here: the grid imports this to print commands without them.
"""

import dataclasses
import re

KINDS = ('std', 'pause', 'filler')
PLACEMENTS = ('append', 'prepend')
# The paper's names for a finetuning kind.
LABELS = {'std': 'StdFT', 'pause': 'PauseFT', 'filler': 'FillerFT'}

_SPEC = (
  r'(?:(?P<std>std)|(?P<kind>pause|filler){ft}(?P<m>\d+)(?:to(?P<hi>\d+))?'
  r'(?:_(?P<placement>prepend|append))?)'
)
_TASK = re.compile(r'^(?P<base>.+?)_' + _SPEC.format(ft='') + '$')
_FOLDER = re.compile('^' + _SPEC.format(ft='ft').replace('(?P<std>std)', '(?P<std>stdft)') + '$')


@dataclasses.dataclass(frozen=True)
class Variant:
  """How many delay tokens, of which kind, where.

  Attributes:
    kind: 'std' (none), 'pause' or 'filler'.
    num_pauses: M; with `max_pauses`, the smallest M drawn.
    placement: 'append' (after the prefix, the paper's PauseFT) or 'prepend'.
    max_pauses: None for a fixed M; else the largest M drawn (inclusive), > num_pauses.
  """

  kind: str
  num_pauses: int = 0
  placement: str = 'append'
  max_pauses: int | None = None

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f'Variant kind must be one of {KINDS}, got {self.kind!r}.')
    if self.placement not in PLACEMENTS:
      raise ValueError(f'placement must be one of {PLACEMENTS}, got {self.placement!r}.')
    if self.kind == 'std' and (
      self.num_pauses or self.max_pauses is not None or self.placement != 'append'
    ):
      raise ValueError(f'A std variant has no pauses, got {self}.')
    if self.num_pauses < 0:
      raise ValueError(f'num_pauses must be >= 0, got {self.num_pauses}.')
    if self.max_pauses is not None and self.max_pauses <= self.num_pauses:
      raise ValueError(
        f'A random number of pauses needs lo < hi, got {self.num_pauses}to{self.max_pauses}; '
        f'for a fixed M write {self.kind}{self.max_pauses}.'
      )

  @classmethod
  def make(
    cls, num_pauses: int, placement: str = 'append', filler=None, max_pauses: int | None = None
  ) -> 'Variant':
    """The variant of a task registration's arguments (0 pauses, not random: std)."""
    if num_pauses == 0 and max_pauses is None:
      return cls('std')
    return cls('pause' if filler is None else 'filler', num_pauses, placement, max_pauses)

  @property
  def random(self) -> bool:
    return self.max_pauses is not None

  @property
  def largest(self) -> int:
    """The most delay tokens an example gets (the fixed M, or hi)."""
    return self.num_pauses if self.max_pauses is None else self.max_pauses

  @property
  def count(self) -> str:
    """'10', or '0to10' for M drawn from 0..10."""
    return str(self.num_pauses) + ('' if self.max_pauses is None else f'to{self.max_pauses}')

  def _spec(self, ft: str) -> str:
    suffix = '' if self.placement == 'append' else f'_{self.placement}'
    return f'{self.kind}{ft}{self.count}{suffix}'

  def task(self, base: str) -> str:
    """The downstream task's name, e.g. `squad_pause10`, `squad_pause0to10_prepend`."""
    return f'{base}_std' if self.kind == 'std' else f'{base}_{self._spec("")}'

  @property
  def name(self) -> str:
    """The grid's finetuning folder name, e.g. `stdft`, `pauseft10`, `pauseft0to10`."""
    return 'stdft' if self.kind == 'std' else self._spec('ft')

  @property
  def label(self) -> str:
    """The report's name: StdFT, PauseFT, PauseFT(0..10), FillerFT(0..10)."""
    if self.random:
      return f'{LABELS[self.kind]}({self.num_pauses}..{self.max_pauses})'
    return LABELS[self.kind]

  def with_pauses(self, num_pauses: int) -> 'Variant':
    """The same kind and placement with a fixed M (inference at M_inf); 0 is std."""
    if num_pauses == 0:
      return Variant('std')
    return Variant(self.kind if self.kind != 'std' else 'pause', num_pauses, self.placement)


def _from_match(match) -> Variant:
  if match['std']:
    return Variant('std')
  hi = match['hi']
  return Variant(
    match['kind'], int(match['m']), match['placement'] or 'append', None if hi is None else int(hi)
  )


def parse_task(name: str) -> tuple[str, Variant] | None:
  """(base, variant) of a downstream task name, or None if the name is not a variant's.

  Raises:
    ValueError: the name has a variant's shape but an impossible count (e.g. pause5to5).
  """
  match = _TASK.match(name)
  return None if match is None else (match['base'], _from_match(match))


def parse_folder(name: str) -> Variant:
  """The variant of a grid finetuning folder name (`stdft`, `pauseft0to10`, ...)."""
  match = _FOLDER.match(name)
  if not match:
    raise ValueError(f'Not a finetuning variant folder name: {name!r}.')
  return _from_match(match)
