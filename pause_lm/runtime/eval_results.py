"""What an evaluation writes, and the names of its files.

Evaluation owns these names; experiment grids, the report and the tests read them from here.
Kept free of TensorFlow and JAX so that reading results stays light.
"""

from collections.abc import Mapping
import dataclasses
import json
from typing import Any
import uuid

from etils import epath
import numpy as np

from pause_lm.runtime import run_dir

METRICS_FILE = 'metrics.json'
PREDICTIONS_FILE = 'predictions.jsonl'


@dataclasses.dataclass
class EvalResult:
  """One evaluation: the task's metrics and one record per example."""

  task: str
  num_pauses: int | None
  num_examples: int
  truncated_prefixes: int
  metrics: dict[str, float]
  records: list[dict[str, Any]]


def jsonable(value):
  """`value` with bytes, NumPy arrays and scalars made into what json writes."""
  if isinstance(value, bytes):
    return value.decode('utf-8', errors='replace')
  if isinstance(value, np.ndarray):
    return [jsonable(v) for v in value.tolist()]
  if isinstance(value, (list, tuple)):
    return [jsonable(v) for v in value]
  if isinstance(value, Mapping):
    return {str(k): jsonable(v) for k, v in value.items()}
  if isinstance(value, np.generic):
    return value.item()
  return value


def run_eval_dir(step_dir: epath.PathLike) -> epath.Path:
  """Where a checkpoint step's evaluations go by default: `MODEL_DIR/eval`, beside the run's
  checkpoints/ folder and never inside a step, which keep-latest-N rotation deletes."""
  step_dir = epath.Path(step_dir)
  checkpoints = step_dir.parent
  root = checkpoints.parent if checkpoints.name == run_dir.CHECKPOINTS_DIR else checkpoints
  return root / 'eval'


def write_results(
  output_dir: epath.PathLike, result: EvalResult, extra: Mapping[str, Any] = ()
) -> epath.Path:
  """Writes `predictions.jsonl` and `metrics.json` (metrics and what was evaluated) as one set.

  Both are written under temporary names and renamed into place, metrics last, after an older
  metrics.json is removed: a crash or a full disk at any point leaves no metrics.json beside
  other predictions, so "metrics.json exists" means "this evaluation finished" (what the
  experiment runner and the report rely on).
  """
  output_dir = epath.Path(output_dir)
  output_dir.mkdir(parents=True, exist_ok=True)
  summary = {
    'task': result.task,
    'num_inference_pauses': result.num_pauses,
    'num_examples': result.num_examples,
    'truncated_prefixes': result.truncated_prefixes,
    **dict(extra),
    'metrics': result.metrics,
  }
  lines = [json.dumps(jsonable(r), ensure_ascii=False) for r in result.records]
  contents = {
    PREDICTIONS_FILE: ''.join(line + '\n' for line in lines),
    METRICS_FILE: json.dumps(jsonable(summary), indent=2) + '\n',
  }
  suffix = f'.tmp-{uuid.uuid4().hex}'
  staged = {name: output_dir / f'.{name}{suffix}' for name in contents}
  try:
    for name, text in contents.items():
      staged[name].write_text(text)
    (output_dir / METRICS_FILE).unlink(missing_ok=True)
    for name in contents:  # Metrics last.
      staged[name].replace(output_dir / name)
  finally:
    for path in staged.values():
      path.unlink(missing_ok=True)
  return output_dir
