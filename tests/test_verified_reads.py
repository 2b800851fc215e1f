"""Nothing read from a checkpoint is trusted unchecked (docs/reliability.md): evaluation, warm
starts and export verify a step against its checksums as a resume does, evaluation writes its
results where checkpoint rotation cannot delete them and as one set, and a resume with another
model's shape names the differences instead of calling an intact checkpoint damaged.

Every fault is injected for real: values rewritten under their old checksums (bit rot that
still decompresses), random bytes over the stored files, a step deleted while it is read, a
full disk while results are written, an output path that cannot be a folder.
"""

import errno
import json
import os
import pathlib
import shutil

import gin
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from etils import epath

from pause_lm.checkpointing import checkpointer as checkpointing
from pause_lm.checkpointing import step_folder
from pause_lm.checkpointing import verified_read
from pause_lm.checkpointing import warm_start
from pause_lm.hf import convert
from pause_lm.model.transformer import ModelConfig
from pause_lm.runtime import eval_results
from pause_lm.runtime import run_dir as run_dir_lib
from pause_lm.training import trainer

from conftest import SMALL_MODEL_GIN, run_in_process

pytestmark = pytest.mark.usefixtures('in_repo_root')


@pytest.fixture
def run_dir(pausept_run, tmp_path):
  """A copy of the session's small PausePT run with two steps: 3 (its last) and an older 2."""
  model_dir = tmp_path / 'run'
  shutil.copytree(pausept_run.model_dir, model_dir)
  checkpoints = model_dir / 'checkpoints'
  shutil.copytree(checkpoints / '3', checkpoints / '2')
  return model_dir


def garble_params(step_dir):
  """Rewrites the step's state with one parameter changed, keeping its recorded checksums: what
  bit rot that still decompresses looks like to a reader."""
  path = pathlib.Path(step_dir) / 'state'
  state = ocp.PyTreeCheckpointer().restore(path)
  state['params']['token_embed']['embedding'] = np.asarray(
    state['params']['token_embed']['embedding']
  ).copy()
  state['params']['token_embed']['embedding'][7, 3] += 0.25
  shutil.rmtree(path)
  ocp.PyTreeCheckpointer().save(path, state)


def overwrite_bytes(step_dir):
  """4 KiB of random bytes over the middle of every stored array file of the step."""
  for file in (pathlib.Path(step_dir) / 'state').rglob('*'):
    if file.is_file() and file.stat().st_size > 4096 and file.parent.name == 'd':
      with open(file, 'r+b') as f:
        f.seek(file.stat().st_size // 2 - 2048)
        f.write(os.urandom(4096))


def evaluate(checkpoint, *bindings):
  return run_in_process(
    'pause_lm.evaluate',
    '--gin_file=gin/evaluate.gin',
    f'--gin_file={SMALL_MODEL_GIN}',
    '--gin_bindings=ModelConfig.max_len = 64',
    f"--gin.CHECKPOINT_PATH='{checkpoint}'",
    "--gin.TASK='synthetic_qa_std'",
    '--gin.SEQUENCE_LENGTH=64',
    '--gin.NUM_EXAMPLES=4',
    '--gin.EVAL_BATCH_SIZE=4',
    *(f'--gin_bindings={b}' for b in bindings),
  )


def abstract_params(model_dir):
  """The saved parameters' shapes as a target to load into (one device)."""
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  metadata = step_folder.param_metadata(step_folder.resolve_checkpoint(model_dir))
  return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata)


@pytest.mark.parametrize('damage', [garble_params, overwrite_bytes])
def test_evaluating_a_damaged_step_is_refused_and_writes_nothing(run_dir, tmp_path, damage):
  damage(run_dir / 'checkpoints' / '3')
  out = tmp_path / 'out'
  with pytest.raises(checkpointing.DamagedCheckpointError, match=r'step 3 .*(damaged|cannot)'):
    evaluate(run_dir / 'checkpoints' / '3', f"EVAL_OUTPUT_DIR = '{out}'")
  assert not list(out.rglob('metrics.json'))


def test_evaluating_a_run_falls_back_to_its_newest_intact_step(run_dir):
  garble_params(run_dir / 'checkpoints' / '3')
  result = evaluate(run_dir)
  assert result.num_examples == 4
  # Results go to MODEL_DIR/eval/step_N/TASK, never inside the checkpoint step.
  written = json.loads(
    (run_dir / 'eval' / 'step_2' / 'synthetic_qa_std' / 'metrics.json').read_text()
  )
  assert written['step'] == 2
  assert not (run_dir / 'checkpoints' / '2' / 'eval').exists()
  # A reader never moves another run's steps: step 3 is still where it was.
  assert sorted(p.name for p in (run_dir / 'checkpoints').iterdir()) == ['2', '3']


def test_warm_start_refuses_a_damaged_step_and_falls_back_within_a_run(run_dir):
  garble_params(run_dir / 'checkpoints' / '3')
  target = abstract_params(run_dir)
  with pytest.raises(checkpointing.DamagedCheckpointError, match='differ from their recorded'):
    warm_start.load_params(run_dir / 'checkpoints' / '3', target)
  params = warm_start.load_params(run_dir, target)
  saved = ocp.PyTreeCheckpointer().restore(run_dir / 'checkpoints' / '2' / 'state')['params']
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(saved)):
    np.testing.assert_array_equal(a, b)


def test_init_checkpoint_with_every_step_damaged_stops_before_training(
  run_dir, tmp_path, configure
):
  for step in ('2', '3'):
    garble_params(run_dir / 'checkpoints' / step)
  configure(tmp_path / 'finetune', f"train.init_checkpoint = '{run_dir}'", 'TRAIN_STEPS = 3')
  with pytest.raises(
    checkpointing.DamagedCheckpointError, match=r'No intact checkpoint .*\n.*step 3 .*\n.*step 2 '
  ):
    trainer.train()
  assert checkpointing.step_numbers(tmp_path / 'finetune' / 'checkpoints') == []  # Nothing trained.


def test_a_step_deleted_while_it_is_read_stops_and_is_not_recreated(run_dir, monkeypatch):
  step_dir = run_dir / 'checkpoints' / '3'
  real_restore = ocp.PyTreeCheckpointer.restore

  def rotated_away(self, path, *args, **kwargs):
    shutil.rmtree(step_dir, ignore_errors=True)  # The training run's keep-N rotation.
    return real_restore(self, path, *args, **kwargs)

  monkeypatch.setattr(ocp.PyTreeCheckpointer, 'restore', rotated_away)
  with pytest.raises(verified_read.StepDisappearedError, match='deleted while it was read'):
    evaluate(step_dir)
  assert not step_dir.exists()
  assert not (run_dir / 'eval').exists() or not list((run_dir / 'eval').rglob('metrics.json'))


def test_an_output_folder_that_cannot_be_written_stops_before_the_work(run_dir, monkeypatch):
  blocker = run_dir / 'not_a_folder'
  blocker.write_text('a file where the results folder should be')

  def never(*args, **kwargs):
    raise AssertionError('parameters were loaded before the output folder was checked')

  monkeypatch.setattr(warm_start, 'load_step_params', never)
  with pytest.raises(
    run_dir_lib.FolderNotWritableError, match=r'EVAL_OUTPUT_DIR=.*--gin.EVAL_OUTPUT_DIR'
  ):
    evaluate(run_dir, f"EVAL_OUTPUT_DIR = '{blocker}/results'")


def _result():
  return eval_results.EvalResult(
    task='t',
    num_pauses=2,
    num_examples=1,
    truncated_prefixes=0,
    metrics={'accuracy': 50.0},
    records=[{'prefix': 'a', 'prediction': 'b', 'target': ['b']}],
  )


def test_results_are_written_as_one_set_metrics_last(tmp_path, monkeypatch):
  out = tmp_path / 'eval'
  eval_results.write_results(out, _result())
  assert sorted(p.name for p in out.iterdir()) == ['metrics.json', 'predictions.jsonl']
  # The disk fills while the next evaluation's predictions are written into the same folder.
  path_type = type(epath.Path(out))
  real_write = path_type.write_text

  def disk_full(self, text, *args, **kwargs):
    if eval_results.PREDICTIONS_FILE in self.name:
      raise OSError(errno.ENOSPC, 'No space left on device')
    return real_write(self, text, *args, **kwargs)

  monkeypatch.setattr(path_type, 'write_text', disk_full)
  with pytest.raises(OSError, match='No space left'):
    eval_results.write_results(out, _result())
  # The older, complete set is untouched, and nothing half-written is left.
  assert sorted(p.name for p in out.iterdir()) == ['metrics.json', 'predictions.jsonl']
  monkeypatch.undo()

  # The process dies between the two renames: no metrics.json beside the new predictions.
  real_rename = path_type.replace

  def dies_before_metrics(self, target):
    if pathlib.Path(target).name == eval_results.METRICS_FILE:
      raise KeyboardInterrupt
    return real_rename(self, target)

  monkeypatch.setattr(path_type, 'replace', dies_before_metrics)
  with pytest.raises(KeyboardInterrupt):
    eval_results.write_results(out, _result())
  assert sorted(p.name for p in out.iterdir()) == ['predictions.jsonl']


def test_resuming_with_fewer_layers_names_them_and_moves_nothing(tmp_path, configure):
  configure(tmp_path, 'TRAIN_STEPS = 3', 'ModelConfig.num_layers = 3')
  trainer.train()
  configure(tmp_path, 'TRAIN_STEPS = 4', 'ModelConfig.num_layers = 2')
  with pytest.raises(checkpointing.CheckpointMismatchError) as raised:
    trainer.train()
  message = str(raised.value)
  assert "params['layers_2']" in message and 'not in the model' in message
  assert 'intact (nothing was moved)' in message and 'damaged' not in message
  assert not (tmp_path / checkpointing.DAMAGED_FOLDER).exists()
  assert sorted(p.name for p in (tmp_path / 'checkpoints').iterdir()) == ['3']


def test_export_reads_only_verified_parameters(run_dir):
  gin.parse_config_files_and_bindings([SMALL_MODEL_GIN], ['ModelConfig.max_len = 64'])
  garble_params(run_dir / 'checkpoints' / '3')
  with pytest.raises(checkpointing.DamagedCheckpointError, match='step 3 .*differ'):
    convert.checkpoint_params(str(run_dir / 'checkpoints' / '3'), ModelConfig())
  # The run's folder falls back to its newest intact step, as a resume would.
  _, params = convert.checkpoint_params(str(run_dir), ModelConfig())
  saved = ocp.PyTreeCheckpointer().restore(run_dir / 'checkpoints' / '2' / 'state')['params']
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(saved)):
    np.testing.assert_array_equal(a, b)
