"""Set-up shared by the tests: quiet TensorFlow, no GPUs, and the small-run fixtures.

The tests have one small model, `gin/experiments/tiny_test_model.gin` (the experiment-grid
tests use it too). In-process tests parse it through the `configure` fixture; command-line
tests pass the `small_run_flags` fixture after their run file.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')

# pylint: disable=g-import-not-at-top,wrong-import-position
import gin
import pytest
# pylint: enable=g-import-not-at-top,wrong-import-position

SMALL_MODEL_GIN = 'gin/experiments/tiny_test_model.gin'
# A run of seconds on 2 CPU cores: short sequences, small batches, metrics every step.
SMALL_RUN = (
  'ModelConfig.max_len = 64',
  'SEQUENCE_LENGTH = 32',
  'BATCH_SIZE = 8',
  'WARMUP_STEPS = 2',
  'train.log_every_steps = 1',
)


@pytest.fixture(autouse=True)
def _no_gin_left_behind():
  """Clears gin after every test: a binding left behind (say, cuDNN attention from the
  accelerator check's CPU run) would reach every later `ModelConfig()` in the same worker."""
  yield
  gin.clear_config()


@pytest.fixture
def in_repo_root(monkeypatch):
  """Runs the test from the repository root, where gin files include each other; clears gin."""
  from pause_lm.runtime import gin_utils  # pylint: disable=g-import-not-at-top

  monkeypatch.chdir(gin_utils.REPO_ROOT)
  yield
  gin.clear_config()


@pytest.fixture
def configure(in_repo_root):
  """`configure(model_dir, *bindings, run_file=...)`: a run file (gin/quickstart.gin by
  default) with the small run, parsed in-process."""
  del in_repo_root
  from pause_lm.runtime import gin_utils  # pylint: disable=g-import-not-at-top

  def parse(model_dir, *bindings, run_file='gin/quickstart.gin'):
    gin.clear_config()
    gin_utils.parse_gin(
      [run_file, SMALL_MODEL_GIN], [*SMALL_RUN, f"MODEL_DIR = '{model_dir}'", *bindings]
    )

  return parse


@pytest.fixture
def small_run_flags():
  """The small run as command-line flags, to follow a run file's --gin_file."""
  return [f'--gin_file={SMALL_MODEL_GIN}', *(f'--gin_bindings={b}' for b in SMALL_RUN)]


@pytest.fixture
def train_command(small_run_flags):
  """`train_command(model_dir, *bindings)`: the quickstart's training command, small run."""
  import sys  # pylint: disable=g-import-not-at-top

  def command(model_dir, *bindings):
    return [
      sys.executable,
      '-m',
      'pause_lm.train',
      '--gin_file=gin/quickstart.gin',
      *small_run_flags,
      f"--gin.MODEL_DIR='{model_dir}'",
      *(f'--gin_bindings={b}' for b in bindings),
    ]

  return command
