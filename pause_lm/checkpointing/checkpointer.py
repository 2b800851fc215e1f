"""Orbax checkpoints of the train state, the input position and the run's data.

A checkpoint step holds three items: `state` (step, params, optimizer state;
saved asynchronously), `data` (each process's tf.data iterator, so a resumed
run sees exactly the batches an uninterrupted one would have), and `run` (the
data settings the iterator belongs to, so a restart with a different task,
batch or sequence length fails loudly instead of training on the wrong data).
Orbax writes every step to a temporary folder and renames it when complete,
so a crash mid-save never damages the last good checkpoint.

A fourth item, `checksums`, makes the rest trustworthy (docs/reliability.md):
a state is saved only if it is finite and its parameters are bounded, so every
saved step is a good one; the checksum of every saved array is recorded with
it and compared after a restore, so a damaged step is found, moved aside and
the run falls back to the newest intact step.

`Checkpointer` orders those checks around Orbax's calls; each is its own part: `save_guard`
(what may be saved), `save_errors` (a failed write, reported once), `quarantine` (damaged steps
moved aside), `resume_checks` (run settings, shapes, checksums). Reading one step outside a run
is `step_folder`, loading parameters only is `warm_start`; their names are also here, where
callers have always found them.
"""

from collections.abc import Mapping
import dataclasses
import signal
import threading
from typing import Any

from absl import logging
from clu.data import dataset_iterator as clu_iterator
from etils import epath
import gin
import jax
import orbax.checkpoint as ocp

from pause_lm.checkpointing import errors
from pause_lm.checkpointing import quarantine
from pause_lm.checkpointing import resume_checks
from pause_lm.checkpointing import save_errors
from pause_lm.checkpointing import save_guard
from pause_lm.checkpointing import verified_read
from pause_lm.checkpointing.step_folder import CHECKSUMS, DATA, RUN, STATE
from pause_lm.runtime import distributed
from pause_lm.runtime.run_dir import step_numbers as step_numbers  # Re-exported: one JAX-free copy.

# Defined by the parts; named here too, where the trainer, the commands and the tests import
# them from.
from pause_lm.checkpointing.errors import CheckpointMismatchError as CheckpointMismatchError
from pause_lm.checkpointing.errors import CheckpointSaveError as CheckpointSaveError
from pause_lm.checkpointing.errors import DamagedCheckpointError as DamagedCheckpointError
from pause_lm.checkpointing.errors import UnsafeStateError as UnsafeStateError
from pause_lm.checkpointing.quarantine import DAMAGED_FOLDER as DAMAGED_FOLDER
from pause_lm.checkpointing.step_folder import absolute_path as absolute_path
from pause_lm.checkpointing.step_folder import resolve_checkpoint as resolve_checkpoint
from pause_lm.checkpointing.warm_start import load_params as load_params
from pause_lm.checkpointing.warm_start import WarmStartConfig as WarmStartConfig


class DatasetIteratorHandler(ocp.CheckpointHandler):
  """Saves the input position: one file per input shard, written by its reader.

  A `distributed.ShardedIterator` names its files by shard, so a checkpoint
  restores on any process count that divides the shard count; any other CLU
  iterator is saved per process and restores only on the same process count.
  The save is synchronous on purpose: the iterator keeps moving as soon as
  `save` returns, so its position must be captured before that.
  """

  def save(self, directory: epath.Path, args: 'DatasetIteratorSave'):
    if isinstance(args.item, distributed.ShardedIterator):
      args.item.save(directory)
    else:
      args.item.save(directory / _process_filename())

  def restore(
    self, directory: epath.Path, args: 'DatasetIteratorRestore'
  ) -> clu_iterator.DatasetIterator:
    if isinstance(args.item, distributed.ShardedIterator):
      args.item.restore(directory)
      return args.item
    path = directory / _process_filename()
    if not (path.parent / (path.name + '.index')).exists():
      raise FileNotFoundError(
        f'No input-pipeline position for process {jax.process_index()} of '
        f'{jax.process_count()} in {directory}: the checkpoint was written '
        'by a different number of processes. Resume with the process count '
        'that wrote it.'
      )
    args.item.restore(path)
    return args.item


def _process_filename() -> str:
  return f'process_{jax.process_index()}-of-{jax.process_count()}'


@ocp.args.register_with_handler(DatasetIteratorHandler, for_save=True)
@dataclasses.dataclass
class DatasetIteratorSave(ocp.args.CheckpointArgs):
  item: clu_iterator.DatasetIterator


@ocp.args.register_with_handler(DatasetIteratorHandler, for_restore=True)
@dataclasses.dataclass
class DatasetIteratorRestore(ocp.args.CheckpointArgs):
  item: clu_iterator.DatasetIterator


@gin.configurable
@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """When and how checkpoints are written.

  Attributes:
    save_every_steps: Save when the step is a multiple of this (and always
      at the end of training and on SIGTERM).
    keep: How many of the latest checkpoints to keep; None keeps all. Only
      checked states are saved, so the newest one kept is always good.
    async_save: Write in a background thread while training continues.
    max_abs_param: A state whose largest parameter magnitude exceeds this is
      diverging and is never saved (healthy ones stay near 1); None disables
      the bound (non-finite states are refused regardless).
  """

  save_every_steps: int = 1000
  keep: int | None = 3
  async_save: bool = True
  max_abs_param: float | None = 1e4

  def __post_init__(self):
    for name in ('save_every_steps', 'keep'):
      value = getattr(self, name)
      if value is None and name == 'keep':
        continue
      if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(
          f'CheckpointConfig.{name}={value!r} must be an '
          f'integer > 0; set --gin.CheckpointConfig.{name}=...'
        )


class Checkpointer:
  """The run's CheckpointManager plus the checks that guard a save and a resume."""

  def __init__(self, directory: epath.PathLike, config: CheckpointConfig):
    self.directory = absolute_path(directory)
    self._save_every_steps = config.save_every_steps
    self._guard = save_guard.SaveGuard(config.max_abs_param)
    self._errors = save_errors.SaveErrorReporter(self.directory)
    self._quarantine = quarantine.Quarantine(self.directory)
    self._manager = _new_manager(self.directory, config)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def should_save(self, step: int) -> bool:
    """Periodic saves only; the trainer adds the final and SIGTERM saves."""
    return step % self._save_every_steps == 0

  def reached_preemption(self, step: int) -> bool:
    """The multi-host preemption signal (False unless jax.distributed is up)."""
    return self._manager.reached_preemption(step)

  def save(
    self,
    step: int,
    state: Any,
    data_iterator: clu_iterator.DatasetIterator,
    run_info: Mapping[str, Any],
  ) -> bool:
    """Saves `state` as step `step` if it is sane and not already saved.

    Raises:
      UnsafeStateError: The state is not finite or its parameters exceed
        `max_abs_param`; nothing is written.
      CheckpointSaveError: An earlier background save failed.
    """
    self.check_background_save()
    if self.latest_step() == step:
      return False
    report = self._guard.check(step, state, last_good=self.latest_step())
    items = {
      STATE: ocp.args.StandardSave(state),
      DATA: DatasetIteratorSave(data_iterator),
      RUN: ocp.args.JsonSave(dict(run_info)),
      CHECKSUMS: ocp.args.JsonSave(report.checksums),
    }
    try:
      return self._manager.save(step, args=ocp.args.Composite(**items), force=True)
    except Exception as e:  # pylint: disable=broad-except
      raise self._errors.error(e, self._manager.all_steps(), step) from e

  def check_background_save(self) -> None:
    """Raises CheckpointSaveError if a background save has failed (cheap)."""
    try:
      self._manager.check_for_errors()
    except Exception as e:  # pylint: disable=broad-except
      raise self._errors.error(e, self._manager.all_steps()) from e

  def latest_intact(
    self,
    abstract_state: Any,
    data_iterator: clu_iterator.DatasetIterator,
    run_info: Mapping[str, Any],
  ) -> tuple[int, Any] | None:
    """Restores the newest intact step, moving damaged newer ones aside.

    Returns:
      (step, state), or None if the folder holds no checkpoint.

    Raises:
      DamagedCheckpointError: Checkpoints exist but none is intact (then
        nothing is moved).
    """
    steps = sorted(self._manager.all_steps(), reverse=True)
    if not steps:
      return None
    step_dir, state, damaged = verified_read.newest_intact(
      [self.directory / str(step) for step in steps],
      lambda d: self.restore(int(d.name), abstract_state, data_iterator, run_info),
      fix='Restore them from a copy, or move them away to start again '
      '(INIT_CHECKPOINT can take the parameters of a readable one).',
    )
    if damaged:
      self._set_aside([int(d.name) for d in damaged], resumed=int(step_dir.name))
    return int(step_dir.name), state

  def _set_aside(self, steps: list[int], resumed: int) -> None:
    """Moves the damaged `steps` aside once `resumed`, an older one, proved intact."""
    self._quarantine.move(steps)
    self._manager.reload()
    logging.warning(
      'Damaged checkpoint step(s) %s moved to %s; resuming from the newest intact step %d.',
      steps,
      self._quarantine.folder,
      resumed,
    )

  def restore(
    self,
    step: int,
    abstract_state: Any,
    data_iterator: clu_iterator.DatasetIterator,
    run_info: Mapping[str, Any],
  ) -> Any:
    """Restores state and input position, after checking the run settings.

    Args:
      step: The step to restore.
      abstract_state: ShapeDtypeStructs with shardings: what to restore into.
      data_iterator: The freshly built iterator; its position is restored.
      run_info: This run's data settings; must equal the saved ones.

    Returns:
      The restored state, sharded as `abstract_state` says.
    """
    where = self.directory / str(step)
    saved = self._restore(step, {RUN: ocp.args.JsonRestore()})[RUN]
    resume_checks.check_run_settings(self.directory, saved, run_info)
    # Parameters are what a wrong model file gets wrong; check them by name.
    resume_checks.check_shapes(self._saved_params(step), abstract_state['params'], f'{where}')
    items = {
      STATE: ocp.args.StandardRestore(abstract_state),
      DATA: DatasetIteratorRestore(data_iterator),
    }
    has_checksums = (where / CHECKSUMS).exists()
    if has_checksums:
      items[CHECKSUMS] = ocp.args.JsonRestore()
    restored = self._restore(step, items)
    if not has_checksums:
      logging.warning(
        '%s has no recorded checksums (written by an older '
        'version); restored without verifying it.',
        where,
      )
      return restored[STATE]
    resume_checks.check_checksums(step, where, restored[CHECKSUMS], restored[STATE])
    logging.info('Checkpoint step %d verified against its checksums.', step)
    return restored[STATE]

  def _restore(self, step: int, items: Mapping[str, ocp.args.CheckpointArgs]) -> Any:
    """Orbax's restore of `items`; any failure to read means the step is damaged."""
    try:
      return self._manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # pylint: disable=broad-except
      raise errors.unreadable(self.directory / str(step), e) from e

  def _saved_params(self, step: int) -> Any:
    """The saved parameters' metadata (shapes), read without loading them."""
    try:
      return self._manager.item_metadata(step)[STATE].get('params', {})
    except Exception as e:  # pylint: disable=broad-except
      raise errors.unreadable(self.directory / str(step), e) from e

  def wait_until_finished(self) -> None:
    self._errors.quiet_after_failure(self._manager.wait_until_finished)

  def close(self) -> None:
    self._errors.quiet_after_failure(self._manager.close)


def _new_manager(directory: epath.Path, config: CheckpointConfig) -> ocp.CheckpointManager:
  """Orbax's manager of the four items; it owns save intervals, keep-latest-N and async."""
  options = ocp.CheckpointManagerOptions(
    save_interval_steps=config.save_every_steps,
    max_to_keep=config.keep,
    enable_async_checkpointing=config.async_save,
    create=True,
  )
  return ocp.CheckpointManager(
    directory,
    options=options,
    item_handlers={
      STATE: ocp.StandardCheckpointHandler(),
      DATA: DatasetIteratorHandler(),
      RUN: ocp.JsonCheckpointHandler(),
      CHECKSUMS: ocp.JsonCheckpointHandler(),
    },
  )


class PreemptionWatcher:
  """Turns SIGTERM into "save and stop at the end of this step".

  With one process a SIGTERM handler sets a flag. With several, jax's
  coordination service already tracks the signal and agrees on a common step
  (`CheckpointManager.reached_preemption`), so no handler is installed: hosts
  that stop at different steps would deadlock in the save.
  """

  def __init__(self, checkpointer: Checkpointer):
    self._checkpointer = checkpointer
    self._received = threading.Event()
    self._previous = None
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM received: saving a checkpoint after this step.')
    self._received.set()

  def reached(self, step: int) -> bool:
    if jax.process_count() > 1:
      return self._checkpointer.reached_preemption(step)
    return self._received.is_set()

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
