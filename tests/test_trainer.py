"""In-process tests of the trainer: loss, pause batches, failures, finetuning."""

import re
import shutil

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pause_lm.checkpointing import checkpointer as checkpointing
from pause_lm.pipeline import datasets as data
from pause_lm.model import transformer as model_lib
from pause_lm.training import optimizer as optimizer_lib
from pause_lm.runtime import sharding
from pause_lm.training import train_state
from pause_lm.training import hooks as train_hooks
from pause_lm.training import trainer


pytestmark = pytest.mark.usefixtures('in_repo_root')


def test_loss_counts_only_weighted_non_pause_targets():
  pause_id = 5
  logits = jax.random.normal(jax.random.key(0), (1, 4, 8))
  batch = {
    'decoder_target_tokens': jnp.array([[1, pause_id, 2, 0]]),
    'decoder_loss_weights': jnp.array([[1, 1, 1, 0]]),
  }
  _, sums = train_state.loss_sums(logits, batch, pause_id, z_loss=0.0)
  log_probs = jax.nn.log_softmax(logits)
  expected = -(log_probs[0, 0, 1] + log_probs[0, 2, 2])
  assert float(sums['weight']) == 2.0
  np.testing.assert_allclose(sums['cross_entropy'], expected, rtol=1e-6)


def test_z_loss_adds_the_squared_log_partition():
  logits = jnp.array([[[1.0, 2.0, 3.0]]])
  batch = {'decoder_target_tokens': jnp.array([[2]]), 'decoder_loss_weights': jnp.array([[1]])}
  plain, sums = train_state.loss_sums(logits, batch, pause_id=9, z_loss=0.0)
  with_z, _ = train_state.loss_sums(logits, batch, pause_id=9, z_loss=0.5)
  log_z = jax.nn.logsumexp(logits)
  np.testing.assert_allclose(with_z - plain, 0.5 * log_z**2, rtol=1e-6)
  assert float(sums['correct']) == 1.0


def test_pause_pretraining_batches_carry_pauses_without_loss():
  info = data.task_info('synthetic_pause_pretrain')
  it = trainer.create_train_iterator(
    'synthetic_pause_pretrain', sequence_length=128, global_batch_size=8, seed=0, pack=False
  )
  batches = [next(it) for _ in range(5)]
  inputs = np.concatenate([b['decoder_input_tokens'] for b in batches])
  targets = np.concatenate([b['decoder_target_tokens'] for b in batches])
  weights = np.concatenate([b['decoder_loss_weights'] for b in batches])
  # 10% of each sequence is inserted, then the sequence is trimmed back, so
  # slightly under 10% of the positions survive as pauses.
  share = np.mean(inputs == info.pause_id)
  assert 0.08 <= share <= 0.105, share
  assert np.all(weights[targets == info.pause_id] == 0)
  assert np.all(weights[(targets != info.pause_id) & (targets > 0)] == 1)

  std = trainer.create_train_iterator(
    'synthetic_std_pretrain', sequence_length=128, global_batch_size=8, seed=0, pack=False
  )
  assert not np.any(next(std)['decoder_input_tokens'] == info.pause_id)


def test_training_reports_the_pause_share_and_a_falling_loss(tmp_path, configure):
  configure(tmp_path, 'TRAIN_STEPS = 12', 'LEARNING_RATE = 1e-2')
  result = trainer.train()
  metrics = dict(result.history)
  assert 0.07 <= metrics[1]['pause_share'] <= 0.11
  assert metrics[12]['loss'] < metrics[1]['loss'] - 0.5
  assert metrics[1]['weighted_tokens'] < 8 * 32
  config = (tmp_path / 'config.gin').read_text()
  # The whole graph is in the operative config: the run's parts and their settings.
  for wiring in (
    'train.model = @ModelConfig()',
    'train.optimizer = @create_optimizer()',
    'train.mesh = @create_mesh()',
    'train.checkpoint = @CheckpointConfig()',
    'create_optimizer.learning_rate_fn = @learning_rate_schedule()',
  ):
    assert wiring in config


def test_non_finite_loss_stops_without_saving_the_bad_state(tmp_path, configure):
  configure(
    tmp_path,
    'TRAIN_STEPS = 50',
    'LEARNING_RATE = 1e30',
    'WARMUP_STEPS = 0',
    "learning_rate_schedule.kind = 'constant'",
    'create_optimizer.clip_norm = None',
    'CheckpointConfig.save_every_steps = 1',
    # Without the parameter bound the ~1e30 state of step 1 is finite
    # and saved, and the loss guard stops step 2.
    'CheckpointConfig.max_abs_param = None',
  )
  with pytest.raises(train_hooks.NonFiniteError, match=r'Step (\d+): loss=') as e:
    trainer.train()
  bad_step = int(re.search(r'Step (\d+):', str(e.value)).group(1))
  saved = sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir() if p.name.isdigit())
  assert saved and max(saved) == bad_step - 1
  assert f'last good checkpoint is step {bad_step - 1}' in str(e.value)


# The pretrained runs below are `pausept_run` (conftest.py): the small run to step 3, trained
# once for the tests that start from it; finetuning only reads it.


def test_init_checkpoint_loads_params_with_a_fresh_optimizer(tmp_path, configure, pausept_run):
  pretrained = pausept_run.state
  # The warmup's first rate is 0, so one finetuning step leaves the params
  # exactly as loaded while the optimizer counts from 0 again.
  configure(
    tmp_path / 'finetune',
    'TRAIN_STEPS = 1',
    'learning_rate_schedule.total_steps = 10',
    f"train.init_checkpoint = '{pausept_run.model_dir}'",
  )
  finetuned = trainer.train().state
  assert int(finetuned['step']) == 1
  assert int(jax.tree.leaves(finetuned['opt_state'])[0]) == 1
  for x, y in zip(jax.tree.leaves(pretrained['params']), jax.tree.leaves(finetuned['params'])):
    np.testing.assert_array_equal(x, y)


def test_init_checkpoint_from_another_model_names_the_mismatch(tmp_path, configure, pausept_run):
  configure(
    tmp_path / 'finetune',
    'TRAIN_STEPS = 1',
    'learning_rate_schedule.total_steps = 10',
    'ModelConfig.emb_dim = 32',
    f"train.init_checkpoint = '{pausept_run.model_dir}'",
  )
  with pytest.raises(ValueError, match='does not fit this model'):
    trainer.train()


def test_resuming_with_other_data_settings_fails(tmp_path, configure, pausept_run):
  shutil.copytree(pausept_run.model_dir, tmp_path, dirs_exist_ok=True)  # Resumed here.
  configure(tmp_path, 'TRAIN_STEPS = 4', 'BATCH_SIZE = 16')
  with pytest.raises(ValueError, match='batch_size: checkpoint 8, now 16'):
    trainer.train()


def test_train_takes_every_part_as_an_argument_without_gin(tmp_path):
  # The run files wire model, optimizer, mesh and checkpoint settings explicitly; nothing is
  # read from gin behind the caller's back, so the trainer runs with gin empty.
  gin.clear_config()
  result = trainer.train(
    model_dir=str(tmp_path),
    task='synthetic_std_pretrain',
    train_steps=2,
    sequence_length=32,
    batch_size=8,
    log_every_steps=1,
    model=model_lib.ModelConfig(
      num_layers=1, num_heads=2, emb_dim=32, mlp_dim=64, max_len=32, dtype='float32'
    ),
    optimizer=optimizer_lib.create_optimizer(learning_rate_fn=optax.constant_schedule(1e-3)),
    mesh=sharding.create_mesh(),
    checkpoint=checkpointing.CheckpointConfig(save_every_steps=1, async_save=False),
  )
  assert result.step == 2 and [step for step, _ in result.history] == [1, 2]
  assert (tmp_path / 'checkpoints' / '2').exists()
