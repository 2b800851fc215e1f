"""What an evaluation writes, and the names of its files.

Evaluation owns these names; experiment grids, the report and the tests read them from here.
Kept free of TensorFlow and JAX so that reading results stays light.
"""

from collections.abc import Mapping
import dataclasses
import json
from typing import Any

from etils import epath
import numpy as np

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


def write_results(
  output_dir: epath.PathLike, result: EvalResult, extra: Mapping[str, Any] = ()
) -> epath.Path:
  """Writes `metrics.json` (metrics and what was evaluated) and `predictions.jsonl`."""
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
  (output_dir / METRICS_FILE).write_text(json.dumps(jsonable(summary), indent=2) + '\n')
  lines = [json.dumps(jsonable(r), ensure_ascii=False) for r in result.records]
  (output_dir / PREDICTIONS_FILE).write_text(''.join(line + '\n' for line in lines))
  return output_dir
