"""The paper's experiment grid as data: which runs, in which folders, after which.

A grid (Section 3.2 and 5) is two pretraining runs with equal token budgets (StdPT,
PausePT), then for every downstream task and pretrained model the finetuning variants
(StdFT, PauseFT with each M of the grid, optionally prepended pauses and '.' filler), each
with N seeds, then evaluations of every finetuned checkpoint at its own M and, for appended
pauses, at other inference-time M (Section 5.2).

Every run is described by the same gin files and bindings a person would pass to
`python -m pause_lm.train` or `python -m pause_lm.evaluate`, so a grid can be run in one
process (`pause_lm.experiments`) or printed as one shell command per run for a scheduler,
and both give identical folders. Folder names are the only index: the report finds
results by parsing them (`parse_eval_path`), whoever ran the commands.

  {experiment_dir}/pretrain/{stdpt,pausept}
  {experiment_dir}/finetune/{task}/{pretrain}_{finetune}/seed{s}
  {experiment_dir}/finetune/{task}/{pretrain}_{finetune}/seed{s}/eval/minf{M}/metrics.json

with finetune one of `stdft`, `pauseft{M}`, `pauseft{M}_prepend`, `fillerft{M}`, or
`pauseft{lo}to{hi}` for M drawn from lo..hi per example (names: pause_lm.data.variants).
"""

from collections.abc import Mapping, Sequence
import dataclasses
import re
from typing import Any

import gin

from pause_lm.runtime import eval_results
from pause_lm.data import variants

PRETRAIN_VARIANTS = ('stdpt', 'pausept')
# What a grid's folder records about the grid itself (`python -m pause_lm.experiments`).
GRID_FILE = 'grid.json'
# The paper's names for a pretraining variant and a finetuning kind.
LABELS = {'stdpt': 'StdPT', 'pausept': 'PausePT', **variants.LABELS}

_EVAL_PATH = re.compile(
  r'(?:^|/)finetune/(?P<task>[^/]+)/(?P<pretrain>stdpt|pausept)_(?P<finetune>[^/]+)/'
  r'seed(?P<seed>\d+)/eval/minf(?P<m_inf>\d+)/' + re.escape(eval_results.METRICS_FILE) + '$'
)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Grid:
  """One experiment grid; bound in gin/experiments/*.gin.

  Attributes:
    experiment_dir: Root folder of every run.
    tasks: Downstream base tasks (e.g. 'squad'); variants are made from them by name.
    pretrain_gin_files: Gin files of both pretraining runs.
    finetune_gin_files: Gin files of every finetuning run (stdft.gin and a model file).
    eval_gin_files: Gin files of every evaluation (evaluate.gin and the same model file).
    pretrain_tasks: The pretraining task of each variant. Everything else is shared, so both
      see the same number of tokens, as in the paper.
    pretrain_bindings: Gin macro values for both pretraining runs.
    finetune_bindings: Gin macro values for every finetuning run.
    task_bindings: Per-task values on top of finetune_bindings (Appendix G's per-task
      learning rate, steps and batch size).
    eval_bindings: Gin macro values for every evaluation (e.g. NUM_EXAMPLES).
    num_pauses: The finetuning M of PauseFT (the paper: 10 and 50).
    random_pauses: (lo, hi) ranges of delay-robust PauseFT, `PauseFT(lo..hi)`: every
      finetuning example gets its own M from lo..hi (hi for half of them, uniform for the
      rest), taught after every delay up to it (beyond the paper; issue 26).
    inference_pauses: Other inference-time M evaluated for every appended-pause run
      (Section 5.2); its own M (for a range, hi) is always evaluated.
    num_seeds: Finetuning seeds per setting (the paper: 5); seed s sets `train.seed`, which
      also orders the data. Pretraining has one seed, so all randomness is finetuning's.
    prepend: Also run PauseFT with prepended pauses (Section 5.3, Table 2).
    filler: Also finetune StdPT with M '.' fillers instead of pauses (Section 4.3).
    pretrained: Existing checkpoints to use instead of pretraining, by variant.
  """

  experiment_dir: str = gin.REQUIRED
  tasks: Sequence[str] = gin.REQUIRED
  pretrain_gin_files: Sequence[str] = gin.REQUIRED
  finetune_gin_files: Sequence[str] = gin.REQUIRED
  eval_gin_files: Sequence[str] = gin.REQUIRED
  pretrain_tasks: Mapping[str, str] = dataclasses.field(
    default_factory=lambda: {'stdpt': 'c4_std_pretrain', 'pausept': 'c4_pause_pretrain'}
  )
  pretrain_bindings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  finetune_bindings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  task_bindings: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  eval_bindings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  num_pauses: Sequence[int] = (10, 50)
  random_pauses: Sequence[Sequence[int]] = ()
  inference_pauses: Sequence[int] = (0,)
  num_seeds: int = 5
  prepend: bool = False
  filler: bool = False
  pretrained: Mapping[str, str] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if sorted(self.pretrain_tasks) != sorted(PRETRAIN_VARIANTS):
      raise ValueError(
        f'pretrain_tasks needs exactly {PRETRAIN_VARIANTS}, got {sorted(self.pretrain_tasks)}.'
      )
    if any(m <= 0 for m in self.num_pauses) or any(m < 0 for m in self.inference_pauses):
      raise ValueError(
        'num_pauses must be > 0 and inference_pauses >= 0, got '
        f'{self.num_pauses} and {self.inference_pauses}.'
      )
    for pair in self.random_pauses:
      if len(pair) != 2 or not 0 <= pair[0] < pair[1]:
        raise ValueError(f'random_pauses needs (lo, hi) pairs with 0 <= lo < hi, got {pair}.')
    unknown = set(self.task_bindings) - set(self.tasks)
    if unknown:
      raise ValueError(f'task_bindings for tasks not in the grid: {sorted(unknown)}.')


@dataclasses.dataclass(frozen=True)
class Command:
  """One invocation of `module` with gin files and `NAME = value` bindings."""

  module: str  # 'train' or 'evaluate' (pause_lm.train / pause_lm.evaluate)
  gin_files: tuple[str, ...]
  bindings: tuple[tuple[str, str], ...]  # (gin name, value as gin text)
  output_dir: str  # MODEL_DIR or EVAL_OUTPUT_DIR

  def gin_bindings(self) -> list[str]:
    return [f'{name} = {value}' for name, value in self.bindings]


@dataclasses.dataclass(frozen=True)
class Run:
  """A training run (pretraining or finetuning) and the evaluations of its checkpoint."""

  name: str  # Folder relative to experiment_dir.
  train: Command
  evals: tuple[Command, ...] = ()
  depends_on: str | None = None  # The run whose checkpoint this one starts from.


# What a finetuning folder name stands for: kind, M (or lo..hi), placement; `.name` is the
# folder name and `.task(base)` the downstream task it finetunes on.
Finetune = variants.Variant
parse_finetune = variants.parse_folder


@dataclasses.dataclass(frozen=True)
class EvalKey:
  """Where one metrics.json belongs in the report."""

  task: str
  pretrain: str
  finetune: Finetune
  seed: int
  m_inf: int

  @property
  def label(self) -> str:
    """The paper's name, e.g. PausePT_PauseFT."""
    return f'{LABELS[self.pretrain]}_{self.finetune.label}'


def parse_eval_path(path: str) -> EvalKey | None:
  """The grid cell of a metrics.json path, or None for files outside the layout."""
  match = _EVAL_PATH.search(str(path))
  if not match:
    return None
  try:
    finetune = parse_finetune(match['finetune'])
  except ValueError:
    return None
  return EvalKey(
    match['task'], match['pretrain'], finetune, int(match['seed']), int(match['m_inf'])
  )


def gin_value(value: Any) -> str:
  """A Python value as gin text: strings quoted, numbers and None as themselves."""
  if isinstance(value, (list, tuple)):
    return '[' + ', '.join(gin_value(v) for v in value) + ']'
  return repr(value)


def _bindings(*mappings: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
  merged = {}
  for mapping in mappings:
    merged.update(mapping)
  return tuple((name, gin_value(value)) for name, value in merged.items())


def finetune_variants(grid: Grid) -> list[tuple[str, Finetune]]:
  """(pretraining variant, finetuning variant) pairs, in the order they are run."""
  pairs = []
  for pretrain in PRETRAIN_VARIANTS:
    pairs.append((pretrain, Finetune('std', 0)))
    pairs.extend((pretrain, Finetune('pause', m)) for m in grid.num_pauses)
    pairs.extend((pretrain, Finetune('pause', lo, max_pauses=hi)) for lo, hi in grid.random_pauses)
    if grid.prepend:
      pairs.extend((pretrain, Finetune('pause', m, 'prepend')) for m in grid.num_pauses)
  if grid.filler:
    pairs.extend(('stdpt', Finetune('filler', m)) for m in grid.num_pauses)
  return pairs


def inference_pauses(grid: Grid, finetune: Finetune) -> list[int]:
  """M_inf evaluated for a finetuning variant: its own M (a range's hi) first, then the sweep."""
  own = finetune.largest
  if finetune.kind != 'pause' or finetune.placement != 'append':
    return [own]
  return [own] + sorted(set(grid.inference_pauses) - {own})


def pretrain_dir(grid: Grid, pretrain: str) -> str:
  return grid.pretrained.get(pretrain) or f'{grid.experiment_dir}/pretrain/{pretrain}'


def expand(grid: Grid) -> list[Run]:
  """Every run of the grid, each after the run it depends on."""
  runs = []
  for pretrain in PRETRAIN_VARIANTS:
    if pretrain in grid.pretrained:
      continue
    model_dir = pretrain_dir(grid, pretrain)
    bindings = _bindings(
      grid.pretrain_bindings, {'MODEL_DIR': model_dir, 'TASK': grid.pretrain_tasks[pretrain]}
    )
    runs.append(
      Run(
        f'pretrain/{pretrain}',
        Command('train', tuple(grid.pretrain_gin_files), bindings, model_dir),
      )
    )
  for task in grid.tasks:
    for pretrain, finetune in finetune_variants(grid):
      for seed in range(grid.num_seeds):
        name = f'finetune/{task}/{pretrain}_{finetune.name}/seed{seed}'
        model_dir = f'{grid.experiment_dir}/{name}'
        train = Command(
          'train',
          tuple(grid.finetune_gin_files),
          _bindings(
            grid.finetune_bindings,
            grid.task_bindings.get(task, {}),
            {
              'MODEL_DIR': model_dir,
              'INIT_CHECKPOINT': pretrain_dir(grid, pretrain),
              'TASK': finetune.task(task),
              'train.seed': seed,
            },
          ),
          model_dir,
        )
        evals = tuple(
          Command(
            'evaluate',
            tuple(grid.eval_gin_files),
            _bindings(
              grid.eval_bindings,
              {
                'CHECKPOINT_PATH': model_dir,
                'TASK': finetune.task(task),
                'NUM_INFERENCE_PAUSES': m,
                'EVAL_OUTPUT_DIR': f'{model_dir}/eval/minf{m}',
              },
            ),
            f'{model_dir}/eval/minf{m}',
          )
          for m in inference_pauses(grid, finetune)
        )
        depends_on = None if pretrain in grid.pretrained else f'pretrain/{pretrain}'
        runs.append(Run(name, train, evals, depends_on))
  return runs
