r"""Evaluates a checkpoint on a downstream task, at any inference-time number of pauses.

  python -m pause_lm.evaluate --gin_file=gin/evaluate.gin \
      --gin.CHECKPOINT_PATH="'runs/pausept_pauseft10_squad'" \
      --gin.TASK="'squad_pause10'" [--gin.NUM_INFERENCE_PAUSES=5]

Writes metrics.json and predictions.jsonl to EVAL_OUTPUT_DIR (default: MODEL_DIR/eval/step_N/
TASK_EVALUATED, beside the checkpoints, where their rotation cannot delete them) and prints the
metrics. The checkpoint is verified against its checksums first; a damaged step is never
evaluated (docs/reliability.md). The evaluation itself lives in
pause_lm/evaluation/evaluator.py (this module only parses flags, as train.py does for trainer.py, so
that gin sees each configurable once).
"""

from collections.abc import Sequence
import json

# First: TensorFlow's start-up lines are printed as it is imported.
from pause_lm.runtime import console  # pylint: disable=g-bad-import-order

console.quiet_tensorflow_import()

# pylint: disable=g-import-not-at-top,wrong-import-position
from pause_lm.evaluation import evaluator as evaluation
from pause_lm.runtime import gin_utils
# pylint: enable=g-import-not-at-top,wrong-import-position


def main(argv: Sequence[str]) -> None:
  gin_utils.reject_positional_args(argv)
  console.setup_logging()
  gin_utils.parse_settings()
  result = evaluation.evaluate()
  print(
    json.dumps(
      {
        'task': result.task,
        'num_inference_pauses': result.num_pauses,
        'num_examples': result.num_examples,
        'metrics': result.metrics,
      }
    )
  )


if __name__ == '__main__':
  gin_utils.run(main)
