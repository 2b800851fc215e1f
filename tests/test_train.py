"""End-to-end tests of `python -m pause_lm.train`: resume, SIGTERM, gin errors.

These run the real command in subprocesses (a resumed run must be a new
process) on the quickstart config shrunk to a model that trains in
milliseconds per step.
"""

import pathlib
import re
import signal
import subprocess

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import REPO, read_scalars, run_in_process, run_python


@pytest.fixture
def run_train(train_command):
  """`run_train(model_dir, *bindings)`: trains in a subprocess; returns the finished process."""

  def run(model_dir, *bindings):
    return run_python(*train_command(model_dir, *bindings)[1:])

  return run


def restore_state(model_dir, step):
  path = pathlib.Path(model_dir) / 'checkpoints' / str(step) / 'state'
  return ocp.PyTreeCheckpointer().restore(path)


def test_resume_sees_the_same_batches_and_ends_identical(tmp_path, run_train, train_command):
  # The schedule's length is fixed, so stopping at 3 and going on to 6 is the
  # same run as going to 6 at once. The resumed half runs in a new process (nothing of the
  # first half can be left in memory); the other two runs, here.
  common = ('learning_rate_schedule.total_steps = 6', 'CheckpointConfig.save_every_steps = 100')
  straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
  run_in_process(*train_command(straight, 'TRAIN_STEPS = 6', *common)[2:])
  run_in_process(*train_command(resumed, 'TRAIN_STEPS = 3', *common)[2:])
  run_train(resumed, 'TRAIN_STEPS = 6', *common)

  straight_losses = read_scalars(straight)['loss']
  assert sorted(straight_losses) == [1, 2, 3, 4, 5, 6]
  assert read_scalars(resumed)['loss'] == straight_losses
  a, b = restore_state(straight, 6), restore_state(resumed, 6)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))
  # The operative config is written and names the settings used.
  config = (resumed / 'config.gin').read_text()
  assert 'TRAIN_STEPS = 6' in config and 'train.train_steps = %TRAIN_STEPS' in config


def test_sigterm_saves_a_restorable_checkpoint_and_exits_cleanly(tmp_path, train_command):
  model_dir = tmp_path / 'run'
  process = subprocess.Popen(
    train_command(model_dir, 'TRAIN_STEPS = 100000', 'CheckpointConfig.save_every_steps = 100000'),
    cwd=REPO,
    stderr=subprocess.PIPE,
    stdout=subprocess.DEVNULL,
    text=True,
  )
  try:
    for line in process.stderr:
      if re.search(r'step +3/100000 .*loss', line):
        break
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
  finally:
    if process.poll() is None:
      process.kill()
  assert process.returncode == 0, stderr[-5000:]
  steps = [int(p.name) for p in (model_dir / 'checkpoints').iterdir() if p.name.isdigit()]
  assert len(steps) == 1 and steps[0] >= 3
  state = restore_state(model_dir, steps[0])
  assert int(state['step']) == steps[0]
  assert (model_dir / 'checkpoints' / str(steps[0]) / 'data').is_dir()


def test_missing_required_setting_names_the_flag():
  result = run_python(
    '-m', 'pause_lm.train', '--gin_file=gin/quickstart.gin', timeout=120, check=False
  )
  assert result.returncode != 0
  assert 'MODEL_DIR: set it with --gin.MODEL_DIR=...' in result.stderr
  assert 'Traceback' not in result.stderr
