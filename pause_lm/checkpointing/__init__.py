"""Saving and restoring runs with Orbax (the only package that calls it) and their checksums."""

from pause_lm.checkpointing.checkpointer import absolute_path
from pause_lm.checkpointing.checkpointer import CheckpointConfig
from pause_lm.checkpointing.checkpointer import Checkpointer
from pause_lm.checkpointing.checkpointer import CheckpointSaveError
from pause_lm.checkpointing.checkpointer import DAMAGED_FOLDER
from pause_lm.checkpointing.checkpointer import DamagedCheckpointError
from pause_lm.checkpointing.checkpointer import DatasetIteratorHandler
from pause_lm.checkpointing.checkpointer import DatasetIteratorRestore
from pause_lm.checkpointing.checkpointer import DatasetIteratorSave
from pause_lm.checkpointing.checkpointer import load_params
from pause_lm.checkpointing.checkpointer import PreemptionWatcher
from pause_lm.checkpointing.checkpointer import resolve_checkpoint
from pause_lm.checkpointing.checkpointer import step_numbers
from pause_lm.checkpointing.checkpointer import UnsafeStateError
from pause_lm.checkpointing.checkpointer import WarmStartConfig
