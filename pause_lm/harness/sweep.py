"""Every task's metrics against M_inf (the paper's Figure 4(c), for any lm-eval task).

One loaded model is evaluated at each M_inf in turn (`PauseLM.set_num_pauses`), so the
parameters are read and the tasks are built once; the table has one row per task and metric
and one column per M_inf, and is written as `sweep.md` (Markdown) and `sweep.json` (rows)
with each M_inf's full lm-eval results in `num_pauses_{M}/results.json`.

No JAX or lm-eval at import: `metric_rows` and `table` read lm-eval's results dicts.
"""

from collections.abc import Iterable, Mapping, Sequence
import json
import math
import os
from typing import Any

SWEEP_MARKDOWN = 'sweep.md'
SWEEP_JSON = 'sweep.json'


def parse_num_pauses(text: str) -> list[int]:
  """'0,2,5,10' -> [0, 2, 5, 10] (each >= 0, no repeats)."""
  try:
    values = [int(v) for v in str(text).split(',') if v.strip()]
  except ValueError:
    raise ValueError(f'--num_pauses takes integers separated by commas, got {text!r}.') from None
  if not values or any(v < 0 for v in values) or len(set(values)) != len(values):
    raise ValueError(f'--num_pauses needs distinct integers >= 0, e.g. 0,2,5,10; got {text!r}.')
  return values


def metric_rows(results: Mapping[str, Any], num_pauses: int) -> list[dict[str, Any]]:
  """{task, metric, num_pauses, value} of each numeric metric of lm-eval's results (standard
  errors and bookkeeping such as `sample_len` left out: lm-eval names every metric
  `metric,filter`; the metric keeps its filter, `exact_match,strict-match`, unless 'none')."""
  rows = []
  for task, metrics in sorted(results.get('results', {}).items()):
    for key, value in metrics.items():
      name, comma, filter_name = key.partition(',')
      if not comma or name.endswith('_stderr') or isinstance(value, bool):
        continue
      if not isinstance(value, (int, float)) or not math.isfinite(value):
        continue
      metric = name if filter_name in ('', 'none') else f'{name},{filter_name}'
      rows.append({'task': task, 'metric': metric, 'num_pauses': num_pauses, 'value': value})
  return rows


def table(rows: Iterable[Mapping[str, Any]]) -> str:
  """A Markdown table: task and metric down, M_inf across."""
  rows = list(rows)
  pauses = sorted({r['num_pauses'] for r in rows})
  cells: dict[tuple[str, str], dict[int, float]] = {}
  for r in rows:
    cells.setdefault((r['task'], r['metric']), {})[r['num_pauses']] = r['value']
  lines = [
    '| task | metric | ' + ' | '.join(f'M_inf={m}' for m in pauses) + ' |',
    '|---|---|' + '---:|' * len(pauses),
  ]
  for (task, metric), values in sorted(cells.items()):
    shown = [f'{values[m]:.4f}' if m in values else '' for m in pauses]
    lines.append(f'| {task} | {metric} | ' + ' | '.join(shown) + ' |')
  return '\n'.join(lines) + '\n'


def run(
  lm,
  num_pauses: Sequence[int],
  *,
  tasks: Sequence[str],
  task_manager,
  output_path: str | None = None,
  **evaluate_kwargs,
) -> list[dict[str, Any]]:
  """Evaluates `lm` (a PauseLM) on `tasks` at each M_inf; returns the table's rows.

  `evaluate_kwargs` go to `lm_eval.simple_evaluate` (num_fewshot, limit, log_samples, ...).
  """
  from pause_lm.harness import lm_eval_import  # pylint: disable=g-import-not-at-top

  lm_eval = lm_eval_import.require()
  from lm_eval import utils as lm_eval_utils  # pylint: disable=g-import-not-at-top

  rows = []
  for m in num_pauses:
    lm.set_num_pauses(m)
    results = lm_eval.simple_evaluate(
      model=lm, tasks=list(tasks), task_manager=task_manager, **evaluate_kwargs
    )
    if results is None:  # Not the process that reports (lm-eval's rank > 0).
      continue
    results.setdefault('config', {})['pause_lm'] = lm.config()
    rows.extend(metric_rows(results, m))
    if output_path:
      folder = os.path.join(output_path, f'num_pauses_{m}')
      os.makedirs(folder, exist_ok=True)
      samples = results.pop('samples', None)
      with open(os.path.join(folder, 'results.json'), 'w') as f:
        json.dump(results, f, indent=2, default=lm_eval_utils.handle_non_serializable)
      if samples is not None:
        for task, task_samples in samples.items():
          with open(os.path.join(folder, f'samples_{task}.jsonl'), 'w') as f:
            for sample in task_samples:
              f.write(json.dumps(sample, default=lm_eval_utils.handle_non_serializable) + '\n')
  if output_path:
    os.makedirs(output_path, exist_ok=True)
    with open(os.path.join(output_path, SWEEP_MARKDOWN), 'w') as f:
      f.write(table(rows))
    with open(os.path.join(output_path, SWEEP_JSON), 'w') as f:
      json.dump(rows, f, indent=2)
  return rows
