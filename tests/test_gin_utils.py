"""Command-line gin handling: the shorthand, and no flags defined by importing the library."""

from absl import app
import pytest

from pause_lm.runtime import gin_utils

from conftest import run_python


def test_shorthand_becomes_a_binding():
  assert gin_utils.rewrite_gin_args(
    ['prog', '--gin.TRAIN_STEPS=10', "--gin.TASK='x_std'", '--other=1']
  ) == ['prog', '--gin_bindings=TRAIN_STEPS = 10', "--gin_bindings=TASK = 'x_std'", '--other=1']
  with pytest.raises(app.UsageError, match='--gin.NAME=value'):
    gin_utils.rewrite_gin_args(['prog', '--gin.TRAIN_STEPS'])


def test_importing_the_library_defines_no_flags():
  # A user's program may have its own --gin_file; only pause-lm's commands declare theirs.
  code = (
    'from absl import flags\n'
    'from pause_lm.runtime import gin_utils\n'
    'from pause_lm.training import aot, trainer\n'
    'from pause_lm import evaluation\n'
    "assert 'gin_file' not in flags.FLAGS, 'defined at import'\n"
    # Multi-host start-up and the AOT check: defined by `python -m pause_lm.train`, which
    # passes their values in.
    "for name in ('distributed', 'coordinator_address', 'num_processes', 'process_id',\n"
    "             'simulated_devices'):\n"
    "  assert name not in flags.FLAGS, f'--{name} defined at import'\n"
    'gin_utils.define_flags()\n'
    'gin_utils.define_flags()  # Twice is fine: the commands share one FLAGS.\n'
    "assert 'gin_file' in flags.FLAGS\n"
  )
  run_python('-c', code)
