"""Saving and restoring runs with Orbax (the only package that calls it) and their checksums."""

from pause_lm.checkpointing.checkpointer import CheckpointConfig
from pause_lm.checkpointing.checkpointer import Checkpointer
from pause_lm.checkpointing.checkpointer import DatasetIteratorHandler
from pause_lm.checkpointing.checkpointer import DatasetIteratorRestore
from pause_lm.checkpointing.checkpointer import DatasetIteratorSave
from pause_lm.checkpointing.checkpointer import PreemptionWatcher
from pause_lm.checkpointing.checkpointer import step_numbers
from pause_lm.checkpointing.errors import CheckpointMismatchError
from pause_lm.checkpointing.errors import CheckpointSaveError
from pause_lm.checkpointing.errors import DamagedCheckpointError
from pause_lm.checkpointing.errors import UnsafeStateError
from pause_lm.checkpointing.quarantine import DAMAGED_FOLDER
from pause_lm.checkpointing.step_folder import absolute_path
from pause_lm.checkpointing.step_folder import candidate_steps
from pause_lm.checkpointing.step_folder import param_metadata
from pause_lm.checkpointing.step_folder import read_checksums
from pause_lm.checkpointing.step_folder import read_run_info
from pause_lm.checkpointing.step_folder import resolve_checkpoint
from pause_lm.checkpointing.step_folder import restore_numpy_state
from pause_lm.checkpointing.step_folder import save_params
from pause_lm.checkpointing.step_folder import state_metadata
from pause_lm.checkpointing.verified_read import read_newest_intact
from pause_lm.checkpointing.verified_read import StepDisappearedError
from pause_lm.checkpointing.warm_start import load_params
from pause_lm.checkpointing.warm_start import load_step_params
from pause_lm.checkpointing.warm_start import WarmStartConfig
