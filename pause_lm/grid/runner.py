"""Running an experiment grid (pause_lm.grid.spec): what is finished, in which order, how.

`python -m pause_lm.experiments` is the command; this is what it does, without JAX or
TensorFlow, so that planning a grid (`--print_commands`) starts in a second. The runs
themselves are executed by a function the caller passes in: the command's runs them all in
its one process, each as `run_command` with `trainer.train` or `evaluation.evaluate`. So this
package never imports training or evaluation (tests/test_layering.py).

Finished runs are skipped and unfinished ones resumed, so a grid can be stopped and started
again at any point: a training run is finished when its final checkpoint
(`checkpoints/{TRAIN_STEPS}`, which Orbax renames into place only when complete) exists, and
an evaluation when its metrics.json is of the run's latest checkpoint (pause_lm.runtime.run_dir
reads both without JAX).

Printed commands (`print_commands`) come pretraining first, then finetuning, then evaluation,
for a cluster scheduler: every command in a stage depends only on commands of earlier stages
(a finetuning run on its pretraining run, an evaluation on its finetuning run). Those commands
are self-contained and write the same folders as a local run.
"""

import ast
from collections.abc import Callable, Sequence
import dataclasses
import json
import os
import re
import shlex
import sys
import time
from typing import Any

from absl import logging
from etils import epath
import gin

from pause_lm.grid import spec as grid_lib
from pause_lm.runtime import eval_results
from pause_lm.runtime import gin_utils
from pause_lm.runtime import run_dir

TIMINGS_FILE = 'timings.jsonl'
_STAGES = ('pretraining', 'finetuning', 'evaluation')


def load_grid(gin_files: Sequence[str], gin_bindings: Sequence[str] = ()) -> grid_lib.Grid:
  """The Grid the grid gin files describe, its local experiment_dir made absolute.

  Orbax refuses relative checkpoint paths, and absolute ones also keep printed commands
  valid whatever folder a scheduler starts them in.
  """
  gin.clear_config()
  gin_utils.parse_gin(gin_files, gin_bindings)
  grid = grid_lib.Grid()
  if '://' not in grid.experiment_dir:
    grid = dataclasses.replace(grid, experiment_dir=os.path.abspath(grid.experiment_dir))
  return grid


def select(runs: Sequence[grid_lib.Run], only: str | None) -> list[grid_lib.Run]:
  return [r for r in runs if only is None or re.search(only, r.name)]


def shell_command(command: grid_lib.Command) -> str:
  """The command line that runs `command` by hand or on a scheduler."""
  args = ['python', '-m', f'pause_lm.{command.module}']
  args += [f'--gin_file={f}' for f in command.gin_files]
  args += [f'--gin.{name}={value}' for name, value in command.bindings]
  return ' '.join(_quote(a) for a in args)


def _quote(arg: str) -> str:
  """shlex.quote, but gin strings read as --gin.X="'value'" rather than '"'"' chains."""
  if re.fullmatch(r'[\w@%+=:,./-]+', arg):
    return arg
  if not re.search(r'["$`\\!]', arg):
    return f'"{arg}"'
  return shlex.quote(arg)


def _parse(command: grid_lib.Command) -> None:
  gin.clear_config()
  gin_utils.parse_gin(command.gin_files, command.gin_bindings())


def _resolve(value):
  """Follows gin macro references (`train.train_steps = %TRAIN_STEPS`) to their value."""
  while isinstance(value, gin.config.ConfigurableReference):
    value = gin.query_parameter('%' + value.scoped_selector.split('/')[0])
  return value


def is_done(command: grid_lib.Command) -> bool:
  """Whether a command's output is complete and current.

  An evaluation is current when its metrics.json is of the run's latest checkpoint, so one
  written before an interrupted run was resumed is redone. Parses gin for a training run's
  step count.

  Args:
    command: A command of the grid.

  Returns:
    True if running it again would change nothing.
  """
  output = epath.Path(command.output_dir)
  if command.module == 'evaluate':
    metrics = output / eval_results.METRICS_FILE
    if not metrics.exists():
      return False
    checkpoint = ast.literal_eval(dict(command.bindings)['CHECKPOINT_PATH'])
    return json.loads(metrics.read_text()).get('step') == run_dir.latest_step(checkpoint)
  _parse(command)
  steps = int(_resolve(gin.query_parameter('train.train_steps')))
  return (run_dir.checkpoints_dir(output) / str(steps)).exists()


def staged_commands(runs: Sequence[grid_lib.Run]) -> list[list[grid_lib.Command]]:
  """Commands by stage: pretraining, finetuning, evaluation."""
  stages = [[], [], []]
  for run in runs:
    stages[0 if run.name.startswith('pretrain/') else 1].append(run.train)
    stages[2].extend(run.evals)
  return stages


def print_commands(runs: Sequence[grid_lib.Run], pending_only: bool = False) -> str:
  lines = []
  for stage, commands in zip(_STAGES, staged_commands(runs)):
    commands = [c for c in commands if not (pending_only and is_done(c))]
    if commands:
      lines.append(f'# {stage}: {len(commands)} runs, each after the previous stages')
      lines.extend(shell_command(c) for c in commands)
  return '\n'.join(lines)


def _record(grid: grid_lib.Grid, name: str, command: grid_lib.Command, seconds: float):
  path = epath.Path(grid.experiment_dir) / TIMINGS_FILE
  with path.open('a') as f:
    f.write(
      json.dumps(
        {
          'run': name,
          'module': command.module,
          'output_dir': command.output_dir,
          'seconds': round(seconds, 2),
          'finished': time.strftime('%Y-%m-%dT%H:%M:%S'),
        }
      )
      + '\n'
    )


def run_command(
  command: grid_lib.Command, train: Callable[[], Any], evaluate: Callable[[], Any]
) -> None:
  """Runs one command in this process, as its printed command line would.

  Gin is global state: it is cleared and parsed with exactly the command's files and bindings
  before `train` (which returns the train result, with its `step`) or `evaluate` is called.

  Raises:
    RuntimeError: a training run stopped before its last step (interrupted, e.g. SIGTERM).
  """
  _parse(command)
  epath.Path(command.output_dir).mkdir(parents=True, exist_ok=True)
  (epath.Path(command.output_dir) / 'command.sh').write_text(shell_command(command) + '\n')
  if command.module == 'evaluate':
    evaluate()
    return
  steps = int(_resolve(gin.query_parameter('train.train_steps')))
  result = train()
  if result.step != steps:
    raise RuntimeError(
      f'{command.output_dir} stopped at step {result.step} of {steps} (interrupted); '
      'its checkpoint is saved: rerun the grid to resume it.'
    )


def write_grid(grid: grid_lib.Grid, argv: Sequence[str]) -> None:
  """Keeps the grid and the command that ran it next to the runs, for the report."""
  root = epath.Path(grid.experiment_dir)
  root.mkdir(parents=True, exist_ok=True)
  (root / grid_lib.GRID_FILE).write_text(
    json.dumps(
      {
        'command': ' '.join(['python -m pause_lm.experiments', *(_quote(a) for a in argv[1:])]),
        'grid': dataclasses.asdict(grid),
      },
      indent=2,
      default=list,
    )
    + '\n'
  )


def run_grid(
  grid: grid_lib.Grid,
  execute: Callable[[grid_lib.Command], None],
  only: str | None = None,
  argv: Sequence[str] = (),
) -> list[str]:
  """Runs every unfinished command of the grid in sequence, with `execute`.

  Args:
    grid: The grid.
    execute: Runs one command (e.g. `run_command` with the trainer and the evaluator).
    only: Restrict to runs whose name matches this regex.
    argv: The command line, kept in grid.json.

  Returns:
    The output folders of the commands executed (finished ones are skipped).
  """
  write_grid(grid, argv or sys.argv)
  every_run = {run.name: run for run in grid_lib.expand(grid)}
  runs = select(every_run.values(), only)
  commands = [(run, c) for run in runs for c in (run.train, *run.evals)]
  executed = []
  for i, (run, command) in enumerate(commands, 1):
    what = f'[{i}/{len(commands)}] {command.module} {command.output_dir}'
    if is_done(command):
      logging.info('%s: finished, skipped.', what)
      continue
    if run.depends_on and not is_done(every_run[run.depends_on].train):
      raise RuntimeError(
        f'{run.name} starts from {run.depends_on}, which is not finished; '
        'run it first (--only left it out).'
      )
    logging.info('%s: running.', what)
    start = time.perf_counter()
    execute(command)
    seconds = time.perf_counter() - start
    _record(grid, run.name, command, seconds)
    logging.info('%s: done in %.1f s.', what, seconds)
    executed.append(command.output_dir)
  return executed
