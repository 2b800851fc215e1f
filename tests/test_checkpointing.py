"""Checkpoint paths: relative MODEL_DIRs work (Orbax itself refuses them)."""

import os

from pause_lm.checkpointing import checkpointer as checkpointing


def test_relative_paths_become_absolute_and_urls_stay(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert str(checkpointing.absolute_path('runs/x')) == os.path.join(str(tmp_path), 'runs/x')
  assert str(checkpointing.absolute_path('gs://bucket/runs/x')) == 'gs://bucket/runs/x'
  manager = checkpointing.Checkpointer('runs/y', checkpointing.CheckpointConfig())
  assert manager.directory.is_absolute()
