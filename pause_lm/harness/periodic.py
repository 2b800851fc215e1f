"""lm-eval tasks during training: the evaluation a run does every EVAL_EVERY_STEPS steps.

`harness_evaluator` is a `train.make_evaluator` (as `periodic_evaluator` is): the trainer
hands it the run's task, model config, sequence length and MODEL_DIR, and calls what it
returns with (params, step) at every evaluation; its scalars go to the run's TensorBoard files
as `harness/{task}/{metric}` (lm-eval's own scale: fractions, as papers quote them), beside the
seqio evaluation's `eval/*` when `also = @periodic_evaluator` (gin/harness.gin wires both).
Training never imports this module: the run file names it.

The model is the run's own parameters, never a checkpoint read back; its vocabulary,
prefix-LM and pause variant are the training task's, so a PauseFT run is evaluated at its M.
"""

from collections.abc import Callable, Sequence
import json
import os
from typing import Any

from absl import logging
from etils import epath
import gin
import jax

from pause_lm.data import variants
from pause_lm.harness import lm_eval_import
from pause_lm.harness import loading
from pause_lm.harness import sweep
from pause_lm.model import transformer as model_lib
from pause_lm.pipeline import datasets as data_lib

# The tasks shipped with pause-lm (`--include_path` of the command).
TASKS_DIR = os.path.join(os.path.dirname(__file__), 'tasks')

EvalFn = Callable[[Any, int], dict[str, float]]
MakeEvaluator = Callable[[str, model_lib.ModelConfig, int, str], EvalFn]


def scalar_name(task: str, metric: str) -> str:
  """`harness/{task}/{metric}`, lm-eval's `metric,filter` as `metric/filter`."""
  return f'harness/{task}/' + metric.replace(',', '/')


@gin.configurable(denylist=['task', 'config', 'sequence_length', 'model_dir'])
def harness_evaluator(
  task: str,
  config: model_lib.ModelConfig,
  sequence_length: int,
  model_dir: str,
  tasks: Sequence[str] = gin.REQUIRED,
  include_path: str | Sequence[str] | None = TASKS_DIR,
  include_defaults: bool | None = None,
  num_pauses: int | None = None,
  limit: int | float | None = 100,
  num_fewshot: int | None = None,
  batch_size: int = 8,
  max_length: int | None = None,
  score_eos: bool = False,
  every_steps: int | None = None,
  final_step: int | None = None,
  also: MakeEvaluator | None = None,
  write_results: bool = True,
) -> EvalFn:
  """Runs lm-eval `tasks` on the run's parameters at each evaluation.

  Args:
    task: The task trained on (its vocabulary, prefix-LM and variant apply).
    config: The model's config.
    sequence_length: The training sequence length (the default max_length).
    model_dir: The run's folder; results go to `model_dir/eval/step_{N}/harness.json`.
    tasks: lm-eval task names (yours under `include_path`, or built-in ones).
    include_path: Folders of task YAML files (default: pause-lm's own, pause_lm/harness/tasks).
    include_defaults: Also index lm-eval's built-in tasks (about 35 s, once); default: only
      when `include_path` is None.
    num_pauses: M_inf; None: the training task's M (0 for pretraining tasks).
    limit: Examples per task (lm-eval's --limit; None for all).
    num_fewshot: Few-shot examples (None: each task's default).
    batch_size: Rows per model call.
    max_length: Tokens per row; None: the training sequence length.
    score_eos: Also score EOS after each continuation (pause-lm's rank classification does).
    every_steps: Run only at steps divisible by this (and at `final_step`); None: at every
      evaluation of the run (EVAL_EVERY_STEPS).
    final_step: The run's last step (bind %TRAIN_STEPS), always evaluated.
    also: Another evaluator factory whose scalars are returned too (`@periodic_evaluator`:
      the seqio evaluation beside lm-eval's).
    write_results: Also write lm-eval's results as JSON at every evaluation.

  Returns:
    A function of (params, step) to scalars for the metric writer.
  """
  lm_eval = lm_eval_import.require()
  from lm_eval import tasks as lm_eval_tasks  # pylint: disable=g-import-not-at-top
  from lm_eval import utils as lm_eval_utils  # pylint: disable=g-import-not-at-top

  from pause_lm.harness import backend  # pylint: disable=g-import-not-at-top

  other = also(task, config, sequence_length, model_dir) if also is not None else None
  if include_defaults is None:
    include_defaults = include_path is None
  task_manager = lm_eval_tasks.TaskManager(
    include_path=include_path, include_defaults=include_defaults
  )
  info = data_lib.task_info(task)
  parsed = variants.parse_task(task.removesuffix('_eval'))
  model = loading.LoadedModel(
    params=None,
    config=config,
    vocabulary=data_lib.get_task(task).output_features['targets'].vocabulary,
    prefix_lm=info.prefix_lm,
    variant=None if parsed is None else parsed[1],
    causal_pauses=data_lib.is_random_pause_variant(task),
    sequence_length=sequence_length,
    source=f'{model_dir} (training)',
  )
  lm = backend.PauseLM(
    model=model,
    num_pauses=num_pauses,
    max_length=max_length or sequence_length,
    batch_size=batch_size,
    score_eos=score_eos,
    progress=False,
  )

  def due(step: int) -> bool:
    return every_steps is None or step % every_steps == 0 or step == final_step

  def run(params, step: int) -> dict[str, float]:
    scalars = dict(other(params, step)) if other is not None else {}
    if not due(step):
      return scalars
    lm.engine.use_params(params)
    results = lm_eval.simple_evaluate(
      model=lm,
      tasks=list(tasks),
      task_manager=task_manager,
      limit=limit,
      num_fewshot=num_fewshot,
      bootstrap_iters=0,
      log_samples=False,
    )
    rows = sweep.metric_rows(results or {}, lm.num_pauses)
    scalars.update({scalar_name(r['task'], r['metric']): float(r['value']) for r in rows})
    if write_results and results is not None and jax.process_index() == 0:
      folder = epath.Path(model_dir) / 'eval' / f'step_{step}'
      folder.mkdir(parents=True, exist_ok=True)
      results.setdefault('config', {})['pause_lm'] = lm.config()
      (folder / 'harness.json').write_text(
        json.dumps(results, indent=2, default=lm_eval_utils.handle_non_serializable)
      )
    logging.info(
      'lm-eval at step %d with %d pauses: %s',
      step,
      lm.num_pauses,
      {f'{r["task"]}/{r["metric"]}': round(r['value'], 4) for r in rows},
    )
    return scalars

  return run
