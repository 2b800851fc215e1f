r"""Runs an experiment grid (pause_lm.grid.spec): pretraining, finetuning seeds, evaluations.

  python -m pause_lm.experiments --gin_file=gin/experiments/toy.gin
  python -m pause_lm.experiments --gin_file=gin/experiments/paper_1b.gin --print_commands

Locally the runs go in sequence, in this one process: each run clears gin, parses exactly the
files and bindings its printed command would pass, and calls `trainer.train()` or
`evaluation.evaluate()`. A toy grid has ~50 training runs and ~100 evaluations of seconds to
a minute each, so paying the ~10 s TensorFlow + JAX import and the tokenizer and task set-up
once instead of per run saves a large share of the wall time; one process also lets the
evaluations of a checkpoint at every inference-time M follow each other without a restart.
Gin is global state, hence the clear-and-parse per run.

Finished runs are skipped and unfinished ones resumed, so the command can be stopped and
started again at any point: a training run is finished when its final checkpoint
(`checkpoints/{TRAIN_STEPS}`, which Orbax renames into place only when complete) exists, and
an evaluation when its metrics.json does. `--only=REGEX` restricts the runs by folder name.

`--print_commands` prints one `python -m pause_lm.train` / `pause_lm.evaluate` command per run
instead, pretraining first, then finetuning, then evaluation, for a cluster scheduler: every
command in a stage depends only on commands of earlier stages (a finetuning run on its
pretraining run, an evaluation on its finetuning run). Those commands are self-contained and
write the same folders as a local run; `--pending_only` leaves out the finished ones.

How a grid is planned and run: pause_lm/grid/runner.py (no JAX or TensorFlow). This command
adds what needs them: the training and evaluation of each run, in this process.
"""

from collections.abc import Sequence
import sys

from absl import flags
from absl import logging

from pause_lm.grid import runner
from pause_lm.grid import spec as grid_lib
from pause_lm.runtime import console
from pause_lm.runtime import gin_utils

_PRINT_COMMANDS = flags.DEFINE_bool(
  'print_commands',
  False,
  'Print one shell command per run, in dependency order, instead of running them.',
)
_PENDING_ONLY = flags.DEFINE_bool(
  'pending_only', False, 'With --print_commands: leave out finished runs.'
)
_ONLY = flags.DEFINE_string(
  'only', None, 'Only the runs whose folder name (e.g. pretrain/stdpt) matches this regex.'
)

COMPILATION_CACHE = 'jax_cache'


def execute(command: grid_lib.Command) -> None:
  """Runs one command of the grid in this process, as its printed command line would."""
  # Imported here so that --print_commands starts without JAX and TensorFlow.
  console.quiet_tensorflow_import()
  from pause_lm.evaluation import evaluator as evaluation  # pylint: disable=g-import-not-at-top
  from pause_lm.training import trainer  # pylint: disable=g-import-not-at-top

  runner.run_command(command, trainer.train, evaluation.evaluate)


def _enable_compilation_cache(directory: str) -> None:
  """Keeps compiled programs on disk, unless the user chose a cache folder already.

  The runs of a grid compile the same few programs (every finetuning run has the same
  shapes); JAX's in-memory cache misses them because each run builds new functions, but its
  persistent cache is keyed by the program itself. On 2 CPU cores that halves a short
  finetuning run's time (compilation was ~5 of ~9 s of the tiny test's runs).
  """
  import jax  # pylint: disable=g-import-not-at-top

  if jax.config.jax_compilation_cache_dir:
    return
  jax.config.update('jax_compilation_cache_dir', directory)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


def run_grid(grid: grid_lib.Grid, only: str | None = None, argv: Sequence[str] = ()) -> list[str]:
  """Runs every unfinished command of the grid in sequence, in this process.

  `runner.run_grid` with `execute`, compiled programs kept in the grid's `jax_cache/`.

  Args:
    grid: The grid.
    only: Restrict to runs whose name matches this regex.
    argv: The command line, kept in grid.json.

  Returns:
    The output folders of the commands executed (finished ones are skipped).
  """
  _enable_compilation_cache(f'{grid.experiment_dir}/{COMPILATION_CACHE}')
  return runner.run_grid(grid, execute, only, argv)


def main(argv: Sequence[str]) -> None:
  gin_utils.reject_positional_args(argv)
  console.setup_logging()
  grid = gin_utils.parse_settings(
    lambda: runner.load_grid(flags.FLAGS.gin_file, flags.FLAGS.gin_bindings)
  )
  if _PRINT_COMMANDS.value:
    runs = runner.select(grid_lib.expand(grid), _ONLY.value)
    print(runner.print_commands(runs, _PENDING_ONLY.value))
    return
  executed = run_grid(grid, _ONLY.value, sys.argv)
  logging.info(
    '%d runs executed; results under %s. Report: python -m pause_lm.report %s',
    len(executed),
    grid.experiment_dir,
    grid.experiment_dir,
  )


if __name__ == '__main__':
  gin_utils.run(main)
