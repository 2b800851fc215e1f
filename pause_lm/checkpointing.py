"""Orbax checkpoints of the train state, the input position and the run's data.

A checkpoint step holds three items: `state` (step, params, optimizer state;
saved asynchronously), `data` (each process's tf.data iterator, so a resumed
run sees exactly the batches an uninterrupted one would have), and `run` (the
data settings the iterator belongs to, so a restart with a different task,
batch or sequence length fails loudly instead of training on the wrong data).
Orbax writes every step to a temporary folder and renames it when complete,
so a crash mid-save never damages the last good checkpoint.
"""

from collections.abc import Mapping
import dataclasses
import logging
import os
import signal
import threading
from typing import Any

from clu.data import dataset_iterator as clu_iterator
from etils import epath
import gin
import jax
import orbax.checkpoint as ocp

from pause_lm import distributed

STATE, DATA, RUN = 'state', 'data', 'run'


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

  def restore(self, directory: epath.Path,
              args: 'DatasetIteratorRestore') -> clu_iterator.DatasetIterator:
    if isinstance(args.item, distributed.ShardedIterator):
      args.item.restore(directory)
      return args.item
    path = directory / _process_filename()
    if not (path.parent / (path.name + '.index')).exists():
      raise FileNotFoundError(
          f'No input-pipeline position for process {jax.process_index()} of '
          f'{jax.process_count()} in {directory}: the checkpoint was written '
          'by a different number of processes. Resume with the process count '
          'that wrote it.')
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
    keep: How many of the latest checkpoints to keep; None keeps all.
    async_save: Write in a background thread while training continues.
  """
  save_every_steps: int = 1000
  keep: int | None = 3
  async_save: bool = True


class Checkpointer:
  """The run's CheckpointManager plus the checks that guard a resume."""

  def __init__(self, directory: epath.PathLike, config: CheckpointConfig):
    self.directory = absolute_path(directory)
    self._save_every_steps = config.save_every_steps
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=config.save_every_steps,
        max_to_keep=config.keep,
        enable_async_checkpointing=config.async_save,
        create=True)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={
            STATE: ocp.StandardCheckpointHandler(),
            DATA: DatasetIteratorHandler(),
            RUN: ocp.JsonCheckpointHandler(),
        })

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def should_save(self, step: int) -> bool:
    """Periodic saves only; the trainer adds the final and SIGTERM saves."""
    return step % self._save_every_steps == 0

  def reached_preemption(self, step: int) -> bool:
    """The multi-host preemption signal (False unless jax.distributed is up)."""
    return self._manager.reached_preemption(step)

  def save(self, step: int, state: Any,
           data_iterator: clu_iterator.DatasetIterator,
           run_info: Mapping[str, Any]) -> bool:
    """Saves `state` as step `step` unless that step is already saved."""
    if self.latest_step() == step:
      return False
    return self._manager.save(
        step,
        args=ocp.args.Composite(**{
            STATE: ocp.args.StandardSave(state),
            DATA: DatasetIteratorSave(data_iterator),
            RUN: ocp.args.JsonSave(dict(run_info)),
        }),
        force=True)

  def restore(self, step: int, abstract_state: Any,
              data_iterator: clu_iterator.DatasetIterator,
              run_info: Mapping[str, Any]) -> Any:
    """Restores state and input position, after checking the run settings.

    Args:
      step: The step to restore.
      abstract_state: ShapeDtypeStructs with shardings: what to restore into.
      data_iterator: The freshly built iterator; its position is restored.
      run_info: This run's data settings; must equal the saved ones.

    Returns:
      The restored state, sharded as `abstract_state` says.
    """
    saved = self._manager.restore(
        step, args=ocp.args.Composite(**{RUN: ocp.args.JsonRestore()}))[RUN]
    changed = {k: (saved.get(k), v) for k, v in run_info.items()
               if saved.get(k) != v}
    if changed:
      details = ', '.join(f'{k}: checkpoint {old!r}, now {new!r}'
                          for k, (old, new) in sorted(changed.items()))
      raise ValueError(
          f'{self.directory} holds a run with different data settings '
          f'({details}). Resuming would continue from a data position that '
          'belongs to other data. Restore the original settings, or use a '
          'new MODEL_DIR (with INIT_CHECKPOINT to start from these weights).')
    # Parameters are what a wrong model file gets wrong; check them by name.
    saved_params = self._manager.item_metadata(step)[STATE].get('params', {})
    _check_shapes(saved_params, abstract_state['params'],
                  f'{self.directory / str(step)}', prefix='params')
    restored = self._manager.restore(
        step,
        args=ocp.args.Composite(**{
            STATE: ocp.args.StandardRestore(abstract_state),
            DATA: DatasetIteratorRestore(data_iterator),
        }))
    return restored[STATE]

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def absolute_path(path: epath.PathLike) -> epath.Path:
  """Orbax refuses relative paths; users write `--gin.MODEL_DIR="'runs/x'"`. URLs pass as is."""
  text = os.fspath(path)
  return epath.Path(text if '://' in text else os.path.abspath(text))


def resolve_checkpoint(path: epath.PathLike) -> epath.Path:
  """Finds the checkpoint step folder that `path` means.

  Accepts a step folder (`MODEL_DIR/checkpoints/1000`), a checkpoints folder,
  or a MODEL_DIR; the latter two mean their latest complete step.

  Args:
    path: One of the above.

  Returns:
    The step folder.
  """
  path = absolute_path(path)
  if (path / STATE).exists():
    return path
  if (path / 'checkpoints').exists():
    path = path / 'checkpoints'
  steps = sorted(int(p.name) for p in path.iterdir()
                 if p.name.isdigit() and (p / STATE).exists()) if (
                     path.exists()) else []
  if not steps:
    raise FileNotFoundError(
        f'INIT_CHECKPOINT={str(path)!r} holds no checkpoint: give a '
        'MODEL_DIR, its checkpoints/ folder, or one step folder in it.')
  return path / str(steps[-1])


def load_params(path: epath.PathLike, abstract_params: Any) -> Any:
  """Loads only the parameters of a checkpoint (for finetuning).

  Args:
    path: See `resolve_checkpoint`.
    abstract_params: ShapeDtypeStructs with shardings for the parameters.

  Returns:
    The parameters, sharded as `abstract_params` says.
  """
  step_dir = resolve_checkpoint(path)
  checkpointer = ocp.PyTreeCheckpointer()
  metadata = checkpointer.metadata(step_dir / STATE).item_metadata.tree
  _check_shapes(metadata.get('params', {}), abstract_params,
                str(step_dir), prefix='params')
  target = {'params': abstract_params}
  restored = checkpointer.restore(
      step_dir / STATE,
      args=ocp.args.PyTreeRestore(
          item=target,
          restore_args=ocp.checkpoint_utils.construct_restore_args(target),
          partial_restore=True))
  logging.info('Loaded parameters from %s.', step_dir)
  return restored['params']


def _check_shapes(saved_tree: Any, abstract_tree: Any, where: str,
                  prefix: str = '') -> None:
  """Names every parameter whose saved shape differs from the model's."""
  saved = {jax.tree_util.keystr(p): tuple(m.shape) for p, m in
           jax.tree_util.tree_flatten_with_path(saved_tree)[0]
           if hasattr(m, 'shape')}
  wanted = {jax.tree_util.keystr(p): tuple(s.shape) for p, s in
            jax.tree_util.tree_flatten_with_path(abstract_tree)[0]}
  problems = [f'{prefix}{k}: checkpoint {saved.get(k)}, model {v}'
              for k, v in sorted(wanted.items()) if saved.get(k) != v]
  if problems:
    raise ValueError(
        f'The checkpoint at {where} does not fit this model:\n  ' +
        '\n  '.join(problems[:10]) +
        ('\n  ...' if len(problems) > 10 else '') +
        '\nUse the model gin file (and NUM_EMBEDDINGS) it was trained with.')


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
    if (jax.process_count() == 1 and
        threading.current_thread() is threading.main_thread()):
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
