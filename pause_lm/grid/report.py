"""An experiment grid's report: Table 1 layout, the M sweep and inference-M curves.

`write_report` (what `python -m pause_lm.report EXPERIMENT_DIR` runs) reads every
`finetune/.../eval/minf{M}/metrics.json` under the folder (the layout of pause_lm.grid.spec,
whoever ran the runs) and writes `report.md` and `figures/*.png` there:

- Table 1 (the paper's layout): per task and metric, mean ± std over finetuning seeds of the
  four variants, PauseFT at the best M of the grid (highest mean, as the paper reports the
  better of M = 10 and 50; chosen on the evaluated split, so it flatters PauseFT slightly)
  and at each M; delay-robust PauseFT(lo..hi) (M random per example) in columns of its own,
  at M_inf = hi.
- Figure 4(b) style: the metric against the finetuning M (0 is StdFT), per pretraining.
- Figure 4(c) style: the metric against the inference-time M, one line per finetuning scheme
  (PauseFT at each M and PauseFT(lo..hi)).
- The prepend (Table 2) and '.' filler (Section 4.3) ablations when the grid ran them.
- For decoding tasks, the runs that answered some examples with nothing (from
  `predictions.jsonl`): the form Section 5.2's collapse at M_inf = 0 takes.
- Every seed's value, so each cell can be checked against its metrics files.

Means and sample standard deviations (n - 1) are computed from the files' numbers as they
are; cells are printed with one decimal, as in the paper.
"""

from collections.abc import Sequence
import collections
import json
import math

from etils import epath
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from pause_lm.runtime import eval_results
from pause_lm.grid import spec as grid_lib

REPORT_FILE = 'report.md'
FIGURES_DIR = 'figures'
VARIANTS = (('stdpt', 'std'), ('stdpt', 'pause'), ('pausept', 'std'), ('pausept', 'pause'))
_COLORS = {'stdpt': 'tab:blue', 'pausept': 'tab:orange'}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (0 for a single value)."""
  n = len(values)
  mean = sum(values) / n
  if n < 2:
    return mean, 0.0
  return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def format_mean_std(values: Sequence[float], digits: int = 1, seeds: int | None = None) -> str:
  """'52.3 ± 1.2'; '(n=k)' is added when a cell has fewer seeds than `seeds`."""
  if not values:
    return '–'
  mean, std = mean_std(values)
  text = f'{mean:.{digits}f} ± {std:.{digits}f}'
  if seeds is not None and len(values) < seeds:
    text += f' (n={len(values)})'
  return text


def empty_answer_percent(predictions: epath.Path) -> float | None:
  """% of decoded answers that are empty (EOS first), or None without decoded predictions.

  The visible form of Section 5.2's zero-pause collapse: a model finetuned to answer after
  its pauses, asked without them, often stops at once.
  """
  if not predictions.exists():
    return None
  records = [json.loads(line) for line in predictions.read_text().splitlines() if line]
  if not records or any(not isinstance(r.get('output'), str) for r in records):
    return None  # Scoring tasks record candidate scores, not decoded text.
  return 100 * sum(not r['output'].strip() for r in records) / len(records)


class Results:
  """Metrics of every evaluation, by (task, pretrain, finetune, M_inf) and seed."""

  def __init__(self, experiment_dir: epath.PathLike):
    self.root = epath.Path(experiment_dir)
    # (task, pretrain, Finetune, m_inf) -> {seed: {metric: value}}
    self.cells = collections.defaultdict(dict)
    # Decoding tasks only: the same keys -> {seed: % of examples answered with nothing}.
    self.empty = collections.defaultdict(dict)
    for path in sorted(
      self.root.glob(f'finetune/*/*/seed*/eval/minf*/{eval_results.METRICS_FILE}')
    ):
      key = grid_lib.parse_eval_path(str(path.relative_to(self.root)))
      if key is None:
        continue
      metrics = json.loads(path.read_text())['metrics']
      self.cells[key.task, key.pretrain, key.finetune, key.m_inf][key.seed] = metrics
      empty = empty_answer_percent(path.parent / eval_results.PREDICTIONS_FILE)
      if empty is not None:
        self.empty[key.task, key.pretrain, key.finetune, key.m_inf][key.seed] = empty
    self.tasks = sorted({k[0] for k in self.cells})
    self.seeds = max((len(v) for v in self.cells.values()), default=0)

  def metrics(self, task: str) -> list[str]:
    return sorted(
      {m for k, v in self.cells.items() if k[0] == task for seed in v.values() for m in seed}
    )

  def values(self, task, pretrain, finetune, metric, m_inf=None) -> list[float]:
    """Per-seed values (seed order) at M_inf (default: the finetuning M; a range's hi)."""
    m_inf = finetune.largest if m_inf is None else m_inf
    seeds = self.cells.get((task, pretrain, finetune, m_inf), {})
    return [seeds[s][metric] for s in sorted(seeds) if metric in seeds[s]]

  def finetunes(
    self, task, pretrain, kind, placement='append', random: bool | None = False
  ) -> list[grid_lib.Finetune]:
    """Finetuning variants of this kind that have results, by M (fixed before ranges).

    `random`: False for a fixed M only, True for M drawn from a range only, None for both.
    """
    found = {k[2] for k in self.cells if k[0] == task and k[1] == pretrain}
    return sorted(
      (
        f
        for f in found
        if f.kind == kind and f.placement == placement and random in (None, f.random)
      ),
      key=lambda f: (f.random, f.num_pauses, f.largest),
    )

  def ranges(self) -> list[grid_lib.Finetune]:
    """Every appended PauseFT(lo..hi) variant with results, for Table 1's extra columns."""
    return sorted(
      {
        k[2]
        for k in self.cells
        if k[2].kind == 'pause' and k[2].random and k[2].placement == 'append'
      },
      key=lambda f: (f.num_pauses, f.largest),
    )

  def best(self, task, pretrain, metric) -> grid_lib.Finetune | None:
    """The appended-PauseFT M with the highest mean (the smaller M on ties)."""
    scored = [
      (mean_std(v)[0], -f.num_pauses, f)
      for f in self.finetunes(task, pretrain, 'pause')
      if (v := self.values(task, pretrain, f, metric))
    ]
    return max(scored, key=lambda x: x[:2])[2] if scored else None

  def m_infs(self, task, pretrain, finetune) -> list[int]:
    return sorted(k[3] for k in self.cells if k[:3] == (task, pretrain, finetune))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
  return lines + ['']


def _label(pretrain: str, kind: str) -> str:
  return f'{grid_lib.LABELS[pretrain]}_{grid_lib.LABELS[kind]}'


def table1(results: Results) -> list[str]:
  """The paper's Table 1: four variants, PauseFT at the best M of the grid; then a column per
  pretraining and PauseFT(lo..hi) range, at M_inf = hi."""
  ranges = results.ranges()
  rows = []
  for task in results.tasks:
    for metric in results.metrics(task):
      row = [task, metric]
      for pretrain, kind in VARIANTS:
        finetune = (
          grid_lib.Finetune('std', 0) if kind == 'std' else results.best(task, pretrain, metric)
        )
        cell = '–'
        if finetune is not None:
          cell = format_mean_std(
            results.values(task, pretrain, finetune, metric), seeds=results.seeds
          )
          if kind == 'pause':
            cell += f' (M={finetune.num_pauses})'
        row.append(cell)
      for finetune in ranges:
        for pretrain in grid_lib.PRETRAIN_VARIANTS:
          row.append(
            format_mean_std(results.values(task, pretrain, finetune, metric), seeds=results.seeds)
          )
      rows.append(row)
  return _table(
    [
      'Task',
      'Metric',
      *(_label(p, k) for p, k in VARIANTS),
      *(f'{grid_lib.LABELS[p]}_{f.label}' for f in ranges for p in grid_lib.PRETRAIN_VARIANTS),
    ],
    rows,
  )


def _m_ft(finetune: grid_lib.Finetune) -> str:
  """The finetuning M as the tables print it: '10', or '0..10' for a random M."""
  return (
    f'{finetune.num_pauses}..{finetune.max_pauses}' if finetune.random else str(finetune.num_pauses)
  )


def table_each_m(results: Results) -> list[str]:
  rows = []
  for task in results.tasks:
    for metric in results.metrics(task):
      for pretrain in grid_lib.PRETRAIN_VARIANTS:
        for finetune in results.finetunes(task, pretrain, 'pause', random=None):
          rows.append(
            [
              task,
              metric,
              _label(pretrain, 'pause'),
              _m_ft(finetune),
              format_mean_std(
                results.values(task, pretrain, finetune, metric), seeds=results.seeds
              ),
            ]
          )
  return _table(['Task', 'Metric', 'Variant', 'M', 'mean ± std'], rows)


def table_inference(results: Results) -> list[str]:
  """Section 5.2: PauseFT models evaluated at other inference-time M."""
  rows = []
  for task in results.tasks:
    for metric in results.metrics(task):
      for pretrain in grid_lib.PRETRAIN_VARIANTS:
        for finetune in results.finetunes(task, pretrain, 'pause', random=None):
          for m_inf in results.m_infs(task, pretrain, finetune):
            rows.append(
              [
                task,
                metric,
                _label(pretrain, 'pause'),
                _m_ft(finetune),
                str(m_inf),
                format_mean_std(
                  results.values(task, pretrain, finetune, metric, m_inf), seeds=results.seeds
                ),
              ]
            )
  return _table(['Task', 'Metric', 'Variant', 'M_ft', 'M_inf', 'mean ± std'], rows)


def _by_run(cells):
  """(key, seeds) items of a Results mapping, by task, pretraining, finetuning and M_inf."""
  return sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2].name, kv[0][3]))


def table_empty_answers(results: Results) -> list[str]:
  """Evaluations where some seed answered nothing for some examples (decoding tasks)."""
  if not results.empty:
    return []
  rows = []
  for (task, pretrain, finetune, m_inf), seeds in _by_run(results.empty):
    hit = [s for s in sorted(seeds) if seeds[s] > 0]
    if hit:
      rows.append(
        [
          task,
          f'{pretrain}_{finetune.name}',
          str(m_inf),
          f'{len(hit)} of {len(seeds)}',
          ', '.join(f'{s}: {seeds[s]:.1f}' for s in hit),
        ]
      )
  checked = sum(len(seeds) for seeds in results.empty.values())
  if not rows:
    return [f'No empty answer in any of the {checked} decoding evaluations.', '']
  return [
    f'Every other of the {checked} decoding evaluations answered every example.',
    '',
    *_table(['Task', 'Run', 'M_inf', 'seeds with empty answers', 'seed: % empty'], rows),
  ]


def table_ablations(results: Results) -> list[str]:
  """Prepend vs append (Table 2) and '.' filler vs pauses (Section 4.3), where run."""
  lines = []
  rows = []
  for task in results.tasks:
    for metric in results.metrics(task):
      std = format_mean_std(
        results.values(task, 'stdpt', grid_lib.Finetune('std', 0), metric), seeds=results.seeds
      )
      prepended = {
        f.num_pauses
        for p in grid_lib.PRETRAIN_VARIANTS
        for f in results.finetunes(task, p, 'pause', 'prepend')
      }
      for m in sorted(prepended):
        cells = [
          format_mean_std(
            results.values(task, p, grid_lib.Finetune('pause', m, pl), metric), seeds=results.seeds
          )
          for p in grid_lib.PRETRAIN_VARIANTS
          for pl in ('prepend', 'append')
        ]
        rows.append([task, metric, str(m), std, *cells])
  if rows:
    lines += ['### Prepending vs appending pauses (Table 2 layout)', '']
    lines += _table(
      [
        'Task',
        'Metric',
        'M',
        'StdPT_StdFT',
        'StdPT_PauseFT prepend',
        'StdPT_PauseFT append',
        'PausePT_PauseFT prepend',
        'PausePT_PauseFT append',
      ],
      rows,
    )
  rows = []
  for task in results.tasks:
    for metric in results.metrics(task):
      for filler in results.finetunes(task, 'stdpt', 'filler'):
        m = filler.num_pauses
        rows.append(
          [task, metric, str(m)]
          + [
            format_mean_std(results.values(task, 'stdpt', f, metric), seeds=results.seeds)
            for f in (grid_lib.Finetune('std', 0), filler, grid_lib.Finetune('pause', m))
          ]
        )
  if rows:
    lines += ["### '.' filler instead of pauses on StdPT (Section 4.3)", '']
    lines += _table(['Task', 'Metric', 'M', 'StdPT_StdFT', 'StdPT_FillerFT', 'StdPT_PauseFT'], rows)
  return lines


def table_seeds(results: Results) -> list[str]:
  rows = []
  for (task, pretrain, finetune, m_inf), seeds in _by_run(results.cells):
    for metric in results.metrics(task):
      values = [f'{s}: {seeds[s][metric]:.4g}' for s in sorted(seeds) if metric in seeds[s]]
      rows.append([task, f'{pretrain}_{finetune.name}', str(m_inf), metric, ', '.join(values)])
  return _table(['Task', 'Run', 'M_inf', 'Metric', 'seed: value'], rows)


def _errorbar(ax, xs, cells, **kwargs):
  points = [(x, *mean_std(v)) for x, v in zip(xs, cells) if v]
  if points:
    x, mean, std = zip(*points)
    ax.errorbar(x, mean, yerr=std, capsize=3, **{'marker': 'o', **kwargs})


def plot_num_pauses(results: Results, task: str, metric: str, path: epath.Path) -> bool:
  """Figure 4(b) style: metric against the finetuning M (0 = StdFT)."""
  fig, ax = plt.subplots(figsize=(7, 3.5))
  for pretrain in grid_lib.PRETRAIN_VARIANTS:
    finetunes = [grid_lib.Finetune('std', 0)] + results.finetunes(task, pretrain, 'pause')
    _errorbar(
      ax,
      [f.num_pauses for f in finetunes],
      [results.values(task, pretrain, f, metric) for f in finetunes],
      color=_COLORS[pretrain],
      label=f'{grid_lib.LABELS[pretrain]} (M=0: StdFT)',
    )
  ax.set(xlabel='finetuning pauses M_ft', ylabel=metric, title=f'{task}: number of pauses')
  ax.legend(fontsize=7, loc='center left', bbox_to_anchor=(1.02, 0.5))
  return _save(fig, path)


def plot_inference_pauses(results: Results, task: str, metric: str, path: epath.Path) -> bool:
  """Figure 4(c) style: one line per finetuning scheme (PauseFT at each M; PauseFT(lo..hi)
  thick, dotted, squares) against the inference-time M; StdPT_StdFT dashed."""
  fig, ax = plt.subplots(figsize=(7, 3.5))
  drawn = False
  for pretrain in grid_lib.PRETRAIN_VARIANTS:
    for i, finetune in enumerate(results.finetunes(task, pretrain, 'pause', random=None)):
      m_infs = results.m_infs(task, pretrain, finetune)
      if len(m_infs) < 2:
        continue
      drawn = True
      style = (
        dict(linestyle=(0, (1, 1)), linewidth=2.5, marker='s')
        if finetune.random
        else dict(linestyle=('-', '--', ':', '-.')[i % 4], marker='o')
      )
      _errorbar(
        ax,
        m_infs,
        [results.values(task, pretrain, finetune, metric, m) for m in m_infs],
        color=_COLORS[pretrain],
        label=f'{grid_lib.LABELS[pretrain]}_{finetune.label}'
        + ('' if finetune.random else f' M_ft={finetune.num_pauses}'),
        **style,
      )
  baseline = results.values(task, 'stdpt', grid_lib.Finetune('std', 0), metric)
  if baseline:
    ax.axhline(mean_std(baseline)[0], color='gray', linestyle='--', label='StdPT_StdFT')
  ax.set(xlabel='inference pauses M_inf', ylabel=metric, title=f'{task}: inference-time pauses')
  ax.legend(fontsize=7, loc='center left', bbox_to_anchor=(1.02, 0.5))
  if not drawn:
    plt.close(fig)
    return False
  return _save(fig, path)


def _save(fig, path: epath.Path) -> bool:
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=120, bbox_inches='tight')
  plt.close(fig)
  return True


def write_report(experiment_dir: epath.PathLike) -> epath.Path:
  """Writes report.md and figures/ into the experiment folder; returns report.md's path."""
  results = Results(experiment_dir)
  root = results.root
  if not results.cells:
    raise FileNotFoundError(f'No finetune/*/*/seed*/eval/minf*/metrics.json under {root}.')
  lines = [f'# Pause-token experiment report: {root.name}', '']
  grid_file = root / grid_lib.GRID_FILE
  if grid_file.exists():
    lines += ['Grid command:', '', '```', json.loads(grid_file.read_text())['command'], '```', '']
  lines += [
    f'Mean ± sample std over finetuning seeds (up to {results.seeds} per cell; fewer are '
    'marked n=k). PauseFT at the best M of the grid is the M with the highest mean, '
    "chosen on the same split it is reported on. Every value comes from a run's "
    '`eval/minf{M}/metrics.json`; the last table lists them per seed.',
    '',
    '## Table 1 layout (PauseFT at the best M)',
    '',
    *table1(results),
    '## PauseFT at each M',
    '',
    *table_each_m(results),
    '## Inference-time pauses (Section 5.2)',
    '',
    *table_inference(results),
  ]
  empty = table_empty_answers(results)
  if empty:
    lines += ['## Empty answers (the zero-pause collapse, Section 5.2)', '', *empty]
  ablations = table_ablations(results)
  if ablations:
    lines += ['## Ablations', '', *ablations]
  figures = []
  for task in results.tasks:
    for metric in results.metrics(task):
      for kind, plot in (
        ('num_pauses', plot_num_pauses),
        ('inference_pauses', plot_inference_pauses),
      ):
        name = f'{FIGURES_DIR}/{task}_{metric}_{kind}.png'
        if plot(results, task, metric, root / name):
          figures.append(f'![{task} {metric} {kind}]({name})')
  lines += [
    '## Figures (Figure 4(b) and 4(c) style)',
    '',
    *figures,
    '',
    '## Per-seed values',
    '',
    *table_seeds(results),
  ]
  path = root / REPORT_FILE
  path.write_text('\n'.join(lines) + '\n')
  return path
