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
"""

from collections.abc import Callable, Mapping
import dataclasses
import os
import signal
import threading
from typing import Any

from absl import logging
from clu.data import dataset_iterator as clu_iterator
from etils import epath
from flax import traverse_util
import gin
import jax
import orbax.checkpoint as ocp

from pause_lm.checkpointing import integrity
from pause_lm.runtime import distributed

STATE, DATA, RUN, CHECKSUMS = 'state', 'data', 'run', 'checksums'
# Damaged steps are moved here (next to checkpoints/), never deleted.
DAMAGED_FOLDER = 'damaged_checkpoints'


class UnsafeStateError(FloatingPointError):
  """The state to save is not finite or its parameters exploded."""


class DamagedCheckpointError(RuntimeError):
  """A saved step cannot be read or does not match its recorded checksums."""


class CheckpointSaveError(RuntimeError):
  """A checkpoint (usually a background save) could not be written."""


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
  """The run's CheckpointManager plus the checks that guard a resume."""

  def __init__(self, directory: epath.PathLike, config: CheckpointConfig):
    self.directory = absolute_path(directory)
    self._save_every_steps = config.save_every_steps
    self._max_abs_param = config.max_abs_param
    self._failed = False
    options = ocp.CheckpointManagerOptions(
      save_interval_steps=config.save_every_steps,
      max_to_keep=config.keep,
      enable_async_checkpointing=config.async_save,
      create=True,
    )
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=options,
      item_handlers={
        STATE: ocp.StandardCheckpointHandler(),
        DATA: DatasetIteratorHandler(),
        RUN: ocp.JsonCheckpointHandler(),
        CHECKSUMS: ocp.JsonCheckpointHandler(),
      },
    )

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
    report = integrity.inspect_state(state)
    problem = integrity.unsafe_reason(report, self._max_abs_param)
    if problem:
      raise UnsafeStateError(
        f'Step {step}: {problem}. Training stopped without saving this '
        f'state; the last good checkpoint is step {self.latest_step()}. '
        'Lower the learning rate (or raise warmup), then restart: the run '
        'resumes from that checkpoint.'
      )
    try:
      return self._manager.save(
        step,
        args=ocp.args.Composite(
          **{
            STATE: ocp.args.StandardSave(state),
            DATA: DatasetIteratorSave(data_iterator),
            RUN: ocp.args.JsonSave(dict(run_info)),
            CHECKSUMS: ocp.args.JsonSave(report.checksums),
          }
        ),
        force=True,
      )
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(step, e) from e

  def check_background_save(self) -> None:
    """Raises CheckpointSaveError if a background save has failed (cheap)."""
    try:
      self._manager.check_for_errors()
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(None, e) from e

  def _save_error(self, step: int | None, error: Exception):
    self._failed = True
    good = [
      s
      for s in self._manager.all_steps()
      if s != step and (self.directory / str(s) / STATE).exists()
    ]
    return CheckpointSaveError(
      f'Writing a checkpoint to {self.directory} failed'
      f'{"" if step is None else f" (noticed at step {step})"}: '
      f'{type(error).__name__}: {error}\n'
      f'Training stopped. The newest complete checkpoint is step '
      f'{max(good) if good else None}. Fix the cause (e.g. free disk '
      'space, check write permission), then rerun the same command to '
      'resume from it.'
    )

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
    damaged = []
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        state = self.restore(step, abstract_state, data_iterator, run_info)
      except DamagedCheckpointError as e:
        logging.error('%s', e)
        damaged.append((step, str(e)))
        continue
      for bad_step, _ in damaged:
        self._move_aside(bad_step)
      if damaged:
        self._manager.reload()
        logging.warning(
          'Damaged checkpoint step(s) %s moved to %s; resuming from the newest intact step %d.',
          [s for s, _ in damaged],
          self.directory.parent / DAMAGED_FOLDER,
          step,
        )
      return step, state
    if damaged:
      raise DamagedCheckpointError(
        f'No intact checkpoint in {self.directory}:\n  '
        + '\n  '.join(reason for _, reason in damaged)
        + '\nRestore them from a copy, or move them away to start again '
        '(INIT_CHECKPOINT can take the parameters of a readable one).'
      )
    return None

  def _move_aside(self, step: int) -> None:
    """Moves a damaged step out of the checkpoints folder (process 0)."""
    if jax.process_index() == 0:
      source = self.directory / str(step)
      target_dir = self.directory.parent / DAMAGED_FOLDER
      target_dir.mkdir(parents=True, exist_ok=True)
      target = target_dir / str(step)
      suffix = 1
      while target.exists():
        target, suffix = target_dir / f'{step}-{suffix}', suffix + 1
      source.rename(target)
      logging.warning('Moved damaged checkpoint %s to %s.', source, target)
    if jax.process_count() > 1:
      # pylint: disable-next=g-import-not-at-top
      from jax.experimental import multihost_utils

      multihost_utils.sync_global_devices(f'pause_lm_move_aside_{step}')

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
    try:
      saved = self._manager.restore(step, args=ocp.args.Composite(**{RUN: ocp.args.JsonRestore()}))[
        RUN
      ]
    except Exception as e:  # pylint: disable=broad-except
      raise _damaged(where, e) from e
    changed = {k: (saved.get(k), v) for k, v in run_info.items() if saved.get(k) != v}
    if changed:
      details = ', '.join(
        f'{k}: checkpoint {old!r}, now {new!r}' for k, (old, new) in sorted(changed.items())
      )
      raise ValueError(
        f'{self.directory} holds a run with different data settings '
        f'({details}). Resuming would continue from a data position that '
        'belongs to other data. Restore the original settings, or use a '
        'new MODEL_DIR (with INIT_CHECKPOINT to start from these weights).'
      )
    # Parameters are what a wrong model file gets wrong; check them by name.
    try:
      saved_params = self._manager.item_metadata(step)[STATE].get('params', {})
    except Exception as e:  # pylint: disable=broad-except
      raise _damaged(where, e) from e
    _check_shapes(saved_params, abstract_state['params'], f'{where}', prefix='params')
    items = {
      STATE: ocp.args.StandardRestore(abstract_state),
      DATA: DatasetIteratorRestore(data_iterator),
    }
    has_checksums = (where / CHECKSUMS).exists()
    if has_checksums:
      items[CHECKSUMS] = ocp.args.JsonRestore()
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # pylint: disable=broad-except
      raise _damaged(where, e) from e
    if not has_checksums:
      logging.warning(
        '%s has no recorded checksums (written by an older '
        'version); restored without verifying it.',
        where,
      )
      return restored[STATE]
    mismatched = integrity.mismatches(
      restored[CHECKSUMS], integrity.inspect_state(restored[STATE]).checksums
    )
    if mismatched:
      raise DamagedCheckpointError(
        f'Checkpoint step {step} ({where}) is damaged: {len(mismatched)} '
        f'array(s) differ from their recorded checksums: '
        f'{", ".join(mismatched[:5])}{" ..." if len(mismatched) > 5 else ""}.'
      )
    logging.info('Checkpoint step %d verified against its checksums.', step)
    return restored[STATE]

  def wait_until_finished(self) -> None:
    self._quiet_after_failure(self._manager.wait_until_finished)

  def close(self) -> None:
    self._quiet_after_failure(self._manager.close)

  def _quiet_after_failure(self, action: Callable[[], None]) -> None:
    """Runs `action`; once a save failure was raised, its echoes are not re-raised.

    After a failed background save, Orbax raises the same error again from
    every later call; the first one, with the cause and the fix, is the one
    the user must see last.
    """
    if not self._failed:
      action()
      return
    try:
      action()
    except Exception as e:  # pylint: disable=broad-except
      logging.debug('Ignored after a failed save: %r', e)


def _damaged(where: epath.Path, error: Exception) -> DamagedCheckpointError:
  first_line = str(error).strip().splitlines()[0] if str(error).strip() else ''
  return DamagedCheckpointError(
    f'Checkpoint step {where.name} ({where}) cannot be read (damaged or '
    f'truncated): {type(error).__name__}: {first_line[:300]}'
  )


def absolute_path(path: epath.PathLike) -> epath.Path:
  """Orbax refuses relative paths; users write `--gin.MODEL_DIR="'runs/x'"`. URLs pass as is."""
  text = os.fspath(path)
  return epath.Path(text if '://' in text else os.path.abspath(text))


def step_numbers(folder: epath.Path) -> list[int]:
  """The steps saved in a checkpoints folder, ascending; [] if it does not exist.

  Orbax writes a step into a temporary folder whose name is not a number, so a step that is
  still being written, or was cut off, is never listed.
  """
  if not folder.exists():
    return []
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


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
  steps = [step for step in step_numbers(path) if (path / str(step) / STATE).exists()]
  if not steps:
    raise FileNotFoundError(
      f'INIT_CHECKPOINT={str(path)!r} holds no checkpoint: give a '
      'MODEL_DIR, its checkpoints/ folder, or one step folder in it.'
    )
  return path / str(steps[-1])


@gin.configurable
@dataclasses.dataclass(frozen=True)
class WarmStartConfig:
  """How INIT_CHECKPOINT must fit the model.

  Attributes:
    allow_partial: By default the checkpoint must hold exactly the model's
      parameters (names and shapes), so a wrong model file cannot silently
      drop or invent layers. True loads every parameter whose name and shape
      match; one saved smaller along some axes (e.g. an embedding that gains
      rows) fills the leading block of the fresh one; everything else keeps
      its fresh initial value. Every difference is logged.
  """

  allow_partial: bool = False


def load_params(
  path: epath.PathLike, abstract_params: Any, initial_params: Callable[[], Any] | None = None
) -> Any:
  """Loads only the parameters of a checkpoint (for finetuning).

  Args:
    path: See `resolve_checkpoint`.
    abstract_params: ShapeDtypeStructs with shardings for the parameters.
    initial_params: Makes fresh parameters; needed for a partial load
      (`WarmStartConfig.allow_partial`).

  Returns:
    The parameters, sharded as `abstract_params` says.
  """
  step_dir = resolve_checkpoint(path)
  checkpointer = ocp.PyTreeCheckpointer()
  metadata = checkpointer.metadata(step_dir / STATE).item_metadata.tree
  saved = _shapes(metadata.get('params', {}))
  wanted = _shapes(abstract_params)
  differences = _differences(saved, wanted)
  partial = WarmStartConfig().allow_partial
  if differences and not partial:
    raise ValueError(
      f'The checkpoint at {step_dir} does not fit this model '
      f'({len(differences)} difference(s)):\n  '
      + '\n  '.join(differences[:20])
      + ('\n  ...' if len(differences) > 20 else '')
      + '\nUse the model gin file (and NUM_EMBEDDINGS) it was trained with. '
      'For a deliberate partial load, set '
      '--gin.WarmStartConfig.allow_partial=True.'
    )
  if not differences:
    target = {'params': abstract_params}
    restored = checkpointer.restore(
      step_dir / STATE,
      args=ocp.args.PyTreeRestore(
        item=target,
        restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True,
      ),
    )
    logging.info('Loaded parameters from %s.', step_dir)
    return restored['params']
  return _load_partial(
    checkpointer, step_dir, abstract_params, saved, wanted, differences, initial_params
  )


def _load_partial(
  checkpointer, step_dir, abstract_params, saved, wanted, differences, initial_params
):
  """`load_params` with WarmStartConfig.allow_partial: see its docstring."""
  if initial_params is None:
    raise ValueError('A partial INIT_CHECKPOINT load needs fresh parameters.')
  for line in differences:
    logging.warning('Partial INIT_CHECKPOINT load from %s: %s', step_dir, line)
  flat_abstract = traverse_util.flatten_dict(abstract_params)
  host = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = {}
  for key, abstract in flat_abstract.items():
    name = _key_name(key)
    if name not in saved:
      continue
    if saved[name] == wanted[name]:
      target[key] = abstract
    elif len(saved[name]) == len(wanted[name]) and all(
      a <= b for a, b in zip(saved[name], wanted[name])
    ):
      target[key] = jax.ShapeDtypeStruct(saved[name], abstract.dtype, sharding=host)
  nested = {'params': traverse_util.unflatten_dict(target)}
  restored = traverse_util.flatten_dict(
    checkpointer.restore(
      step_dir / STATE,
      args=ocp.args.PyTreeRestore(
        item=nested,
        restore_args=ocp.checkpoint_utils.construct_restore_args(nested),
        partial_restore=True,
      ),
    )['params']
  )
  fresh = traverse_util.flatten_dict(initial_params())
  for key, value in restored.items():
    if value.shape == fresh[key].shape:
      fresh[key] = value
    else:
      block = tuple(slice(0, d) for d in value.shape)
      fresh[key] = jax.jit(lambda f, v, b=block: f.at[b].set(v), out_shardings=fresh[key].sharding)(
        fresh[key], jax.device_put(value, fresh[key].sharding)
      )
  logging.info(
    'Loaded %d of %d parameter arrays from %s (partial load).',
    len(restored),
    len(flat_abstract),
    step_dir,
  )
  return traverse_util.unflatten_dict(fresh)


def _key_name(key: tuple[str, ...]) -> str:
  return ''.join(f"['{k}']" for k in key)


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  return {
    jax.tree_util.keystr(p): tuple(m.shape)
    for p, m in jax.tree_util.tree_flatten_with_path(tree)[0]
    if hasattr(m, 'shape')
  }


def _differences(
  saved: dict[str, tuple[int, ...]], wanted: dict[str, tuple[int, ...]]
) -> list[str]:
  """Every parameter missing from, extra in, or shaped differently in `saved`."""
  lines = []
  for name in sorted(set(saved) | set(wanted)):
    if name not in saved:
      lines.append(f'params{name}: missing from the checkpoint, model {wanted[name]}')
    elif name not in wanted:
      lines.append(f'params{name}: in the checkpoint {saved[name]}, not in the model')
    elif saved[name] != wanted[name]:
      lines.append(f'params{name}: checkpoint {saved[name]}, model {wanted[name]}')
  return lines


def _check_shapes(saved_tree: Any, abstract_tree: Any, where: str, prefix: str = '') -> None:
  """Names every parameter whose saved shape differs from the model's."""
  saved = _shapes(saved_tree)
  wanted = _shapes(abstract_tree)
  problems = [
    f'{prefix}{k}: checkpoint {saved.get(k)}, model {v}'
    for k, v in sorted(wanted.items())
    if saved.get(k) != v
  ]
  if problems:
    raise ValueError(
      f'The checkpoint at {where} does not fit this model:\n  '
      + '\n  '.join(problems[:10])
      + ('\n  ...' if len(problems) > 10 else '')
      + '\nUse the model gin file (and NUM_EMBEDDINGS) it was trained with.'
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
