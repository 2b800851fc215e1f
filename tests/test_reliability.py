"""In-process reliability tests: divergence-safe saves, checkpoint integrity, strict
settings, exact warm starts, truncation limits, the run lock's rules (docs/reliability.md)."""

import os
import pathlib
import subprocess
import sys

import gin
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from pause_lm.checkpointing import integrity
from pause_lm.checkpointing import checkpointer as checkpointing
from pause_lm import checkpoints
from pause_lm.pipeline import datasets as data
from pause_lm.runtime import gin_utils
from pause_lm.runtime import run_lock
from pause_lm.training import settings_check
from pause_lm.training import trainer

from conftest import run_python


pytestmark = pytest.mark.usefixtures('in_repo_root')


def saved_steps(model_dir):
  folder = pathlib.Path(model_dir) / 'checkpoints'
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def saved_params(model_dir, step):
  path = pathlib.Path(model_dir) / 'checkpoints' / str(step) / 'state'
  return ocp.PyTreeCheckpointer().restore(path)['params']


# Constant rate, saves every step, keep 2: the diverging run.
EVERY_STEP = (
  'WARMUP_STEPS = 0',
  "learning_rate_schedule.kind = 'constant'",
  'create_optimizer.clip_norm = None',
  'CheckpointConfig.save_every_steps = 1',
  'CheckpointConfig.keep = 2',
)


def test_diverging_run_never_saves_bad_state_and_resumes_at_a_lower_rate(tmp_path, configure):
  configure(tmp_path, 'TRAIN_STEPS = 3', 'LEARNING_RATE = 1e-3', *EVERY_STEP)
  trainer.train()
  assert saved_steps(tmp_path) == [2, 3]
  # The first update at this rate makes parameters ~1e30: finite, but exploded.
  configure(tmp_path, 'TRAIN_STEPS = 8', 'LEARNING_RATE = 1e30', *EVERY_STEP)
  with pytest.raises(
    checkpointing.UnsafeStateError,
    match=r'Step 4: the largest parameter magnitude is 1e\+30'
    r'.*the last good checkpoint is step 3\.',
  ):
    trainer.train()
  assert saved_steps(tmp_path) == [2, 3]
  for step in (2, 3):
    largest = max(float(np.max(np.abs(x))) for x in jax.tree.leaves(saved_params(tmp_path, step)))
    assert largest < 100, (step, largest)
  configure(tmp_path, 'TRAIN_STEPS = 5', 'LEARNING_RATE = 1e-4', *EVERY_STEP)
  result = trainer.train()
  assert result.step == 5 and result.history[0][0] == 4  # Resumed from step 3.
  assert saved_steps(tmp_path) == [4, 5]


def test_non_finite_optimizer_state_is_never_saved():
  state = {
    'step': jnp.array(3),
    'params': {'w': jnp.ones((2, 3))},
    'opt_state': {'nu': jnp.array([1.0, jnp.nan])},
  }
  report = integrity.inspect_state(state)
  assert integrity.unsafe_reason(report, max_abs_param=None) == (
    'the parameters or optimizer state hold NaN or infinity'
  )
  state['opt_state']['nu'] = jnp.array([1.0, 2.0])
  assert integrity.unsafe_reason(integrity.inspect_state(state), 1e4) is None
  assert 'above CheckpointConfig.max_abs_param=0.5' in integrity.unsafe_reason(
    integrity.inspect_state(state), 0.5
  )


def test_checksums_see_one_flipped_bit_and_moved_values():
  x = jnp.arange(24, dtype=jnp.float32).reshape(4, 6)
  base = int(integrity.array_checksum(x))
  flipped = jax.lax.bitcast_convert_type(
    jax.lax.bitcast_convert_type(x, jnp.uint32).at[2, 5].add(1), jnp.float32
  )
  assert int(integrity.array_checksum(flipped)) != base
  assert int(integrity.array_checksum(x.T.reshape(4, 6))) != base
  assert int(integrity.array_checksum(x.astype(jnp.bfloat16))) != base
  assert int(integrity.array_checksum(np.asarray(x))) == base


def _biggest_state_file(model_dir, step):
  files = [
    p
    for p in (pathlib.Path(model_dir) / 'checkpoints' / str(step) / 'state').rglob('*')
    if p.is_file()
  ]
  return max(files, key=lambda p: p.stat().st_size)


def test_damaged_steps_are_reported_moved_aside_and_the_run_falls_back(tmp_path, configure):
  configure(
    tmp_path,
    'TRAIN_STEPS = 3',
    'CheckpointConfig.save_every_steps = 1',
    'CheckpointConfig.keep = None',
  )
  trainer.train()
  # Step 3: 4 KiB overwritten in the middle of its largest file.
  damaged = _biggest_state_file(tmp_path, 3)
  with open(damaged, 'r+b') as f:
    f.seek(damaged.stat().st_size // 2)
    f.write(os.urandom(4096))
  # Step 2: its largest file truncated to half.
  truncated = _biggest_state_file(tmp_path, 2)
  os.truncate(truncated, truncated.stat().st_size // 2)

  lines, ok, newest = checkpoints.verify(tmp_path)
  assert not ok and newest == 1, lines
  assert (
    lines[0].startswith('step 3: DAMAGED')
    and lines[1].startswith('step 2: DAMAGED')
    and lines[2].startswith('step 1: intact')
  ), lines

  configure(
    tmp_path,
    'TRAIN_STEPS = 4',
    'CheckpointConfig.save_every_steps = 1',
    'CheckpointConfig.keep = None',
  )
  result = trainer.train()
  assert result.history[0][0] == 2  # Resumed from step 1.
  aside = tmp_path / checkpointing.DAMAGED_FOLDER
  assert sorted(p.name for p in aside.iterdir()) == ['2', '3']  # Kept, not deleted.
  assert saved_steps(tmp_path) == [1, 2, 3, 4]
  assert checkpoints.verify(tmp_path)[1]


def test_no_intact_step_stops_and_moves_nothing(tmp_path, configure):
  configure(tmp_path, 'TRAIN_STEPS = 1', 'learning_rate_schedule.total_steps = 10')
  trainer.train()
  truncated = _biggest_state_file(tmp_path, 1)
  os.truncate(truncated, 10)
  configure(tmp_path, 'TRAIN_STEPS = 2', 'learning_rate_schedule.total_steps = 10')
  with pytest.raises(
    checkpointing.DamagedCheckpointError,
    match=r'No intact checkpoint .*\n.*step 1 .*cannot be read',
  ):
    trainer.train()
  assert saved_steps(tmp_path) == [1]


def test_verify_command_exit_code(tmp_path):
  result = run_python('-m', 'pause_lm.checkpoints', 'verify', tmp_path, timeout=120, check=False)
  assert result.returncode == 0 and 'no checkpoint steps' in result.stdout


def test_mistyped_macro_and_names_list_the_nearest_known_ones(tmp_path, configure):
  for binding, expected in (
    ('TRAIN_STEP = 10', 'TRAIN_STEP: Did you mean TRAIN_STEPS?'),
    ('train.trian_steps = 10', 'Did you mean train_steps?'),
    ('trian.train_steps = 10', 'Did you mean train?'),
  ):
    with pytest.raises(gin_utils.UnknownSettingError, match=expected):
      configure(tmp_path, binding)


@pytest.mark.parametrize(
  'binding, message',
  [
    ("TRAIN_STEPS = 'abc'", r"TRAIN_STEPS='abc' \(.*\) must be an integer"),
    ('BATCH_SIZE = 0', r'BATCH_SIZE=0 \(batch_size\) must be > 0'),
    ('BATCH_SIZE = -4', r'BATCH_SIZE=-4 \(batch_size\) must be > 0'),
    ('LEARNING_RATE = 0.0', r'LEARNING_RATE=0.0 .* must be a number > 0'),
    (
      'train.num_microbatches = 3',
      r'BATCH_SIZE=8 is not divisible by '
      r'num_microbatches=3',
    ),
    (
      "TASK = 'synthetic_qa_pause30'",
      r'SEQUENCE_LENGTH=32 gives '
      r"'synthetic_qa_pause30' a prefix of 24 tokens .* no room for its 30 pauses",
    ),
    (
      'train.eval_every_steps = 2',
      r'EVAL_EVERY_STEPS=2 needs an evaluation to run: bind '
      r'`train.make_evaluator = @periodic_evaluator`',
    ),
  ],
)
def test_bad_settings_stop_before_anything_is_written(tmp_path, binding, message, configure):
  model_dir = tmp_path / 'run'
  configure(model_dir, binding)
  with pytest.raises(ValueError, match=message):
    trainer.train()
  assert not model_dir.exists()


PAUSEFT = (
  'INIT_CHECKPOINT = None',
  'TRAIN_STEPS = 2',
  'LEARNING_RATE = 1e-3',
  'EVAL_EVERY_STEPS = None',
)


def test_pauseft_composes_its_task_from_base_task_and_num_pauses(tmp_path, configure):
  configure(
    tmp_path / 'run',
    *PAUSEFT,
    "BASE_TASK = 'synthetic_qa'",
    'NUM_PAUSES = 3',
    run_file='gin/pauseft.gin',
  )
  assert gin.get_bindings('train')['task'] == 'synthetic_qa_pause3'
  configure(
    tmp_path / 'run',
    *PAUSEFT,
    "BASE_TASK = 'synthetic_qa'",
    'MAX_PAUSES = 12',
    "PAUSE_PLACEMENT = 'prepend'",
    run_file='gin/pauseft.gin',
  )
  assert gin.get_bindings('train')['task'] == 'synthetic_qa_pause10to12_prepend'


def test_pauseft_refuses_a_task_by_name_that_would_ignore_num_pauses(tmp_path, configure):
  # TASK alone leaves BASE_TASK unset: stopped when the settings are read.
  with pytest.raises(
    gin_utils.MissingSettingError, match=r'BASE_TASK: set it with --gin.BASE_TASK'
  ):
    configure(
      tmp_path / 'run', *PAUSEFT, "TASK = 'synthetic_qa_pause10'", run_file='gin/pauseft.gin'
    )
  # TASK beside BASE_TASK would still ignore NUM_PAUSES: stopped before anything is written.
  model_dir = tmp_path / 'run'
  configure(
    model_dir,
    *PAUSEFT,
    "BASE_TASK = 'synthetic_qa'",
    "TASK = 'synthetic_qa_pause10'",
    'NUM_PAUSES = 50',
    run_file='gin/pauseft.gin',
  )
  with pytest.raises(
    settings_check.SettingValueError, match=r"TASK='synthetic_qa_pause10' was set, but .* BASE_TASK"
  ):
    trainer.train()
  assert not model_dir.exists()


def test_warm_start_from_a_deeper_model_lists_the_extra_layers(tmp_path, configure):
  configure(
    tmp_path / 'deep',
    'TRAIN_STEPS = 1',
    'ModelConfig.num_layers = 3',
    'learning_rate_schedule.total_steps = 10',
  )
  deep = trainer.train().state['params']
  configure(
    tmp_path / 'shallow',
    'TRAIN_STEPS = 1',
    'learning_rate_schedule.total_steps = 10',
    f"train.init_checkpoint = '{tmp_path / 'deep'}'",
  )
  with pytest.raises(
    ValueError,
    match=r'(?s)does not fit this model \(\d+ '
    r'difference\(s\)\):.*layers_2.*in the checkpoint .*not in '
    r'the model.*WarmStartConfig.allow_partial',
  ):
    trainer.train()
  assert not (tmp_path / 'shallow' / 'checkpoints').exists() or not saved_steps(
    tmp_path / 'shallow'
  )

  # The opt-in: a new embedding row (NUM_EMBEDDINGS + 128) on a 3-layer model.
  rows = deep['token_embed']['embedding'].shape[0]
  configure(
    tmp_path / 'wider',
    'TRAIN_STEPS = 1',
    'ModelConfig.num_layers = 3',
    f'NUM_EMBEDDINGS = {rows + 128}',
    'WarmStartConfig.allow_partial = True',
    'learning_rate_schedule.total_steps = 10',
    f"train.init_checkpoint = '{tmp_path / 'deep'}'",
  )
  wider = trainer.train().state['params']  # Warmup's first rate is 0.
  assert wider['token_embed']['embedding'].shape[0] == rows + 128
  for path, value in jax.tree_util.tree_flatten_with_path(deep)[0]:
    # Same-shaped arrays load whole; larger ones get the saved block first.
    block = tuple(slice(0, d) for d in value.shape)
    np.testing.assert_array_equal(
      _get(wider, path)[block], value, err_msg=jax.tree_util.keystr(path)
    )


def _get(tree, path):
  for key in path:
    tree = tree[key.key]
  return tree


def test_truncating_most_prefixes_stops_with_the_numbers(tmp_path, configure):
  configure(
    tmp_path,
    "TASK = 'synthetic_qa_pause10'",
    'TRAIN_STEPS = 20',
    'TruncationLimit.min_examples = 8',
    'SEQUENCE_LENGTH = 24',
  )
  with pytest.raises(
    data.TooManyTruncationsError,
    match=r'synthetic_qa_pause10: \d+ of \d+ examples .* had their '
    r'prefix cut .*Raise SEQUENCE_LENGTH',
  ):
    trainer.train()


def test_truncations_are_reported_in_the_metrics(tmp_path, configure):
  configure(
    tmp_path,
    "TASK = 'synthetic_qa_pause10'",
    'TRAIN_STEPS = 1',
    'learning_rate_schedule.total_steps = 10',
    'TruncationLimit.max_fraction = 1.0',
  )
  metrics = dict(trainer.train().history)[1]
  assert 'truncated_examples' in metrics and 0 <= metrics['truncated_fraction'] <= 1


def test_lock_of_a_live_run_stops_a_second_one(tmp_path):
  holder = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
  try:
    (tmp_path / run_lock.LOCK_FILENAME).write_text(
      '{"host": "%s", "pid": %d, "start_time": "t", "command": "train A"}'
      % (run_lock.socket.gethostname(), holder.pid)
    )
    with pytest.raises(
      run_lock.RunLockedError, match=rf'in use by another run: pid {holder.pid} .*train A'
    ):
      run_lock.RunLock(tmp_path).acquire()
    lock = run_lock.RunLock(tmp_path, break_lock=True)
    lock.acquire()
    assert f'"pid": {os.getpid()}' in (tmp_path / run_lock.LOCK_FILENAME).read_text()
    lock.release()
    assert not (tmp_path / run_lock.LOCK_FILENAME).exists()
  finally:
    holder.kill()
    holder.wait()


def test_lock_of_a_dead_run_on_this_host_is_taken_over(tmp_path, caplog):
  dead = subprocess.Popen([sys.executable, '-c', 'pass'])
  dead.wait()
  (tmp_path / run_lock.LOCK_FILENAME).write_text(
    '{"host": "%s", "pid": %d, "start_time": "t", "command": "killed"}'
    % (run_lock.socket.gethostname(), dead.pid)
  )
  lock = run_lock.RunLock(tmp_path)
  lock.acquire()
  assert 'Taking over the lock' in caplog.text
  lock.release()
  # Another host's lock is never provably gone.
  (tmp_path / run_lock.LOCK_FILENAME).write_text(
    '{"host": "elsewhere", "pid": %d, "start_time": "t", "command": "B"}' % dead.pid
  )
  with pytest.raises(run_lock.RunLockedError, match='host elsewhere'):
    run_lock.RunLock(tmp_path).acquire()


def test_settings_check_reads_the_pause_count_of_a_task():
  assert settings_check.task_num_pauses('synthetic_qa_pause10') == 10
  assert settings_check.task_num_pauses('synthetic_qa_std') == 0
  assert settings_check.task_num_pauses('synthetic_qa_pause2to7_prepend') == 7  # The largest M.
