r"""Trains a pause-lm model from gin files.

  python -m pause_lm.train --gin_file=gin/quickstart.gin \
      --gin.MODEL_DIR="'runs/quickstart'"

Later `--gin_file`s and `--gin_bindings` (or `--gin.NAME=value`) override
earlier ones. Re-running with the same MODEL_DIR resumes the run. The
settings actually used are written to MODEL_DIR/config.gin.

Multi-host: run the same command on every host. TPU slices and SLURM job
steps connect by themselves; elsewhere pass --coordinator_address=HOST:PORT
--num_processes=N --process_id=I (see pause_lm/runtime/distributed.py and launch/).
`--compile_only` compiles the step for the configured mesh and prints its
per-device memory instead of training (see pause_lm/training/aot.py).

The console shows one progress line per log interval and a summary line at
the end; libraries' INFO lines are shown with --verbosity=0 or
--logger_levels=NAME:INFO (see pause_lm/runtime/console.py). A run the
library stops (a setting, the run lock, divergence, a damaged checkpoint...)
ends with its cause and fix as the last lines and exit status 1, without a
traceback unless --verbosity=1 (`console.report_errors`, docs/reliability.md).
"""

from collections.abc import Sequence

from absl import flags

# First: TensorFlow's start-up lines are printed as it is imported.
from pause_lm.runtime import console  # pylint: disable=g-bad-import-order

console.quiet_tensorflow_import()

# pylint: disable=g-import-not-at-top,wrong-import-position
from pause_lm.training import aot
from pause_lm.runtime import distributed
from pause_lm.runtime import gin_utils
from pause_lm.training import trainer
# pylint: enable=g-import-not-at-top,wrong-import-position

_COMPILE_ONLY = flags.DEFINE_bool(
  'compile_only',
  False,
  'Compile the train step ahead of time, print its per-device memory and exit without training.',
)
_SIMULATED_DEVICES = flags.DEFINE_integer('simulated_devices', None, aot.SIMULATED_DEVICES_HELP)
# Multi-host start-up (pause_lm/runtime/distributed.py): the command's flags, passed to
# `distributed.initialize`, so that importing the library defines none.
_DISTRIBUTED = flags.DEFINE_enum(
  'distributed',
  'auto',
  ['auto', 'on', 'off'],
  'Multi-host start-up. auto: connect when a coordinator address is given '
  'or SLURM / a multi-host TPU slice is detected; on: always call '
  'jax.distributed.initialize (JAX detects the cluster); off: one process.',
)
_COORDINATOR_ADDRESS = flags.DEFINE_string(
  'coordinator_address',
  None,
  "host:port of process 0's coordination service (default: $JAX_COORDINATOR_ADDRESS).",
)
_NUM_PROCESSES = flags.DEFINE_integer(
  'num_processes', None, 'Number of processes (default: $JAX_NUM_PROCESSES).'
)
_PROCESS_ID = flags.DEFINE_integer(
  'process_id', None, "This process's index, 0..num_processes-1 (default: $JAX_PROCESS_ID)."
)


def main(argv: Sequence[str]) -> None:
  gin_utils.reject_positional_args(argv)
  console.setup_logging()
  if not _COMPILE_ONLY.value:
    # Before anything queries devices: the device list is fixed at start-up.
    distributed.initialize(
      _DISTRIBUTED.value, _COORDINATOR_ADDRESS.value, _NUM_PROCESSES.value, _PROCESS_ID.value
    )
  gin_utils.parse_settings()
  if _COMPILE_ONLY.value:
    aot.run_from_gin(_SIMULATED_DEVICES.value)
    return
  trainer.train()


if __name__ == '__main__':
  gin_utils.run(main)
