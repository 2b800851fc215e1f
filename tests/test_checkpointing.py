"""Checkpoint paths: relative MODEL_DIRs work (Orbax itself refuses them); the parts of the
checkpointer that need no train state: moving damaged steps aside, reporting a failed save
once, naming changed run settings."""

import os

from etils import epath
import pytest

from pause_lm.checkpointing import checkpointer as checkpointing
from pause_lm.checkpointing import quarantine
from pause_lm.checkpointing import resume_checks
from pause_lm.checkpointing import save_errors


def test_relative_paths_become_absolute_and_urls_stay(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert str(checkpointing.absolute_path('runs/x')) == os.path.join(str(tmp_path), 'runs/x')
  assert str(checkpointing.absolute_path('gs://bucket/runs/x')) == 'gs://bucket/runs/x'
  manager = checkpointing.Checkpointer('runs/y', checkpointing.CheckpointConfig())
  assert manager.directory.is_absolute()


def test_a_damaged_step_moves_next_to_checkpoints_and_keeps_an_earlier_copy(tmp_path):
  directory = tmp_path / 'checkpoints'
  aside = quarantine.Quarantine(epath.Path(directory))
  for _ in range(2):
    (directory / '3').mkdir(parents=True)
    (directory / '3' / 'state').write_text('x')
    aside.move([3])
  assert aside.folder == tmp_path / quarantine.DAMAGED_FOLDER
  assert sorted(p.name for p in aside.folder.iterdir()) == ['3', '3-1']
  assert not (directory / '3').exists()


def test_a_failed_save_names_the_newest_complete_step_and_its_echoes_are_quiet(tmp_path):
  for step in (1, 2, 3):  # 3 failed half-way: no state.
    (tmp_path / str(step)).mkdir()
  for step in (1, 2):
    (tmp_path / str(step) / 'state').mkdir()
  reporter = save_errors.SaveErrorReporter(epath.Path(tmp_path))

  def echo():
    raise OSError('No space left on device')

  with pytest.raises(OSError):
    reporter.quiet_after_failure(echo)  # Nothing reported yet: errors are raised.
  error = reporter.error(OSError('No space left on device'), [1, 2, 3], step=2)
  assert f'Writing a checkpoint to {tmp_path} failed (noticed at step 2): OSError: No space' in (
    str(error)
  )
  assert 'The newest complete checkpoint is step 1.' in str(error)
  reporter.quiet_after_failure(echo)  # Once reported, Orbax's repeats are not raised.


def test_changed_run_settings_are_each_named():
  saved = {'task': 'a', 'batch_size': 8}
  resume_checks.check_run_settings('d', saved, {'task': 'a'})  # Only this run's keys count.
  with pytest.raises(ValueError, match=r"batch_size: checkpoint 8, now 16, task: checkpoint 'a'"):
    resume_checks.check_run_settings('d', saved, {'task': 'b', 'batch_size': 16})
