r"""lm-evaluation-harness's own command line, with pause-lm's `pause_lm` model registered.

  python -m pause_lm.harness --model pause_lm \
      --model_args pretrained=runs/pauseft10,num_pauses=10 \
      --tasks pause_synthetic_qa --include_path pause_lm/harness/tasks --include_defaults=false \
      --limit 8 --output_path results/ --log_samples

Everything but two flags is lm-eval's (`lm-eval run --help`):

  --num_pauses=0,2,5,10   a sweep: the model is loaded once and evaluated at each M_inf; one
                          table of every task's metrics against M_inf (`sweep.md`, `sweep.json`
                          in --output_path, and each M's full results beside them)
  --include_defaults=false  index only --include_path's tasks, not lm-eval's 14k built-in task
                          files (about 35 s saved when your tasks are local)

`datasets` runs offline unless HF_DATASETS_OFFLINE is set (`HF_DATASETS_OFFLINE=0` for tasks
on the Hugging Face Hub, such as gsm8k). lm-eval has no plugin discovery for models, so plain
`lm_eval --model pause_lm` cannot find this backend: this module imports it first. The
library's own errors end the command as one message (`console.report_errors`).
"""

from collections.abc import Sequence
import sys

from absl import flags

from pause_lm.runtime import console

_SWEEP_FLAG = '--num_pauses'
_DEFAULTS_FLAG = '--include_defaults'


def pop_flag(argv: list[str], name: str) -> tuple[str | None, list[str]]:
  """The value of `--name=value` (or `--name value`) and the command line without it."""
  rest, value, i = [], None, 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith(name + '='):
      value = arg[len(name) + 1 :]
    elif arg == name and i + 1 < len(argv):
      value = argv[i + 1]
      i += 1
    else:
      rest.append(arg)
    i += 1
  return value, rest


def _only_include_path(lm_eval_tasks) -> None:
  """Makes lm-eval's TaskManager index --include_path alone (its built-in tasks skipped)."""
  base = lm_eval_tasks.TaskManager
  if getattr(base, 'pause_lm_local_only', False):
    return

  class LocalTaskManager(base):
    pause_lm_local_only = True

    def __init__(self, *args, **kwargs):
      kwargs['include_defaults'] = False
      super().__init__(*args, **kwargs)

  lm_eval_tasks.TaskManager = LocalTaskManager


def _bool_flag(value: str | None, name: str) -> bool | None:
  if value is None:
    return None
  if value.lower() in ('1', 'true', 'yes'):
    return True
  if value.lower() in ('0', 'false', 'no'):
    return False
  raise ValueError(f'{name} takes true or false, got {value!r}.')


def main(argv: Sequence[str]) -> list | None:
  """Runs lm-eval's CLI (or a sweep) on `argv` (program name first); returns a sweep's rows."""
  sweep_value, rest = pop_flag(list(argv[1:]), _SWEEP_FLAG)
  defaults_value, rest = pop_flag(rest, _DEFAULTS_FLAG)
  # pylint: disable=g-import-not-at-top
  from pause_lm.harness import backend  # Registers the `pause_lm` model.
  from pause_lm.harness import sweep
  import lm_eval.tasks
  from lm_eval._cli import HarnessCLI
  # pylint: enable=g-import-not-at-top

  if _bool_flag(defaults_value, _DEFAULTS_FLAG) is False:
    _only_include_path(lm_eval.tasks)
  if sweep_value is None:
    from lm_eval import __main__ as lm_eval_main  # pylint: disable=g-import-not-at-top

    sys.argv = ['lm-eval', *rest]
    lm_eval_main.cli_evaluate()
    return None

  num_pauses = sweep.parse_num_pauses(sweep_value)
  from lm_eval.config.evaluate_config import EvaluatorConfig  # pylint: disable=g-import-not-at-top

  sys.argv = ['lm-eval', *rest]
  cfg = EvaluatorConfig.from_cli(HarnessCLI().parse_args())
  if cfg.model != backend.MODEL_NAME:
    raise ValueError(f'--num_pauses sweeps the pause_lm model; got --model {cfg.model}.')
  task_manager = cfg.process_tasks(cfg.metadata)
  lm = backend.PauseLM.create_from_arg_obj(
    dict(cfg.model_args or {}), {'batch_size': cfg.batch_size}
  )
  rows = sweep.run(
    lm,
    num_pauses,
    tasks=cfg.tasks,
    task_manager=task_manager,
    output_path=cfg.output_path,
    num_fewshot=cfg.num_fewshot,
    limit=cfg.limit,
    log_samples=bool(cfg.log_samples),
    gen_kwargs=cfg.gen_kwargs,
  )
  print(sweep.table(rows))
  return rows


def run() -> None:
  """The entry point: absl's logging set up, the library's errors as one message."""
  flags.FLAGS(sys.argv[:1], known_only=True)
  console.setup_logging()
  console.report_errors(main)(sys.argv)


if __name__ == '__main__':
  run()
