"""The training loop: one jitted, sharded step; Orbax resume; hooks for the rest.

Read `train` top to bottom: it gets the model, optimizer, mesh and checkpoint
settings as arguments (`TrainSettings`; the run file wires them: `train.model =
@ModelConfig()`), checks them, takes MODEL_DIR's lock, builds the input pipeline and
restores (or initialises) the state (`_build`), makes the hooks, then steps (`_loop`). What
happens between steps (metrics, the divergence check, evaluation, checkpoints) is
in `train_hooks`. Everything the step needs to be exactly resumable is in the
checkpoint: the state (its `step` also seeds dropout) and the input iterator's
position.
"""

from collections.abc import Callable, Mapping
import dataclasses
from typing import Any

from absl import logging
from clu import metric_writers
from clu.data import dataset_iterator as clu_iterator
from etils import epath
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax

from pause_lm.checkpointing import checkpointer as checkpointing
from pause_lm.runtime import console
from pause_lm.pipeline import datasets as data_lib
from pause_lm.runtime import distributed
from pause_lm.runtime import gin_utils
from pause_lm.model import sizing
from pause_lm.model import transformer as model_lib
from pause_lm.runtime import run_lock
from pause_lm.training import settings as settings_lib
from pause_lm.training.settings import TrainSettings
from pause_lm.training import settings_check
from pause_lm.runtime import sharding
from pause_lm.training import hooks as train_hooks
from pause_lm.training import train_state
from pause_lm.training.train_state import State


@dataclasses.dataclass
class TrainResult:
  """What `train` hands back: the final state and the logged metrics."""

  step: int
  state: State
  history: list[tuple[int, dict[str, float]]]


def create_train_iterator(
  task: str, *, sequence_length: int, global_batch_size: int, seed: int, pack: bool
) -> distributed.ShardedIterator:
  """This process's shards of the training data, as a checkpointable iterator.

  Each process reads only its own SeqIO shards (`distributed.input_shards`,
  one per process by default) and stacks them into its rows of the batch.
  No Python-side prefetching: the iterator's saved position must be the next
  batch the step will see (tf.data's own prefetch buffer is saved with it).
  """
  num_shards = distributed.input_shards()
  if global_batch_size % num_shards:
    raise ValueError(
      f'BATCH_SIZE={global_batch_size} must split evenly over {num_shards} input shards.'
    )

  def make_shard(shard_id):
    dataset = data_lib.get_dataset(
      task,
      'train',
      sequence_length=sequence_length,
      batch_size=global_batch_size // num_shards,
      shuffle=True,
      seed=seed,
      shard_id=shard_id,
      num_shards=num_shards,
      repeat=True,
      pack=pack,
    )
    # clu's TfDatasetIterator (the same saved position) whose failures name the task.
    return data_lib.TaskIterator(dataset, task, 'train')

  return distributed.ShardedIterator(
    make_shard, distributed.local_shard_ids(num_shards), num_shards
  )


def check_batch(
  batch: Mapping[str, np.ndarray], local_batch_size: int, sequence_length: int
) -> None:
  """Fails on the first batch if the pipeline does not give the model's input."""
  missing = [k for k in train_state.REQUIRED_FEATURES if k not in batch]
  if missing:
    raise ValueError(
      f'The input pipeline gives {sorted(batch)} but the trainer needs {missing} as well.'
    )
  for name, value in batch.items():
    if value.shape != (local_batch_size, sequence_length):
      raise ValueError(
        f'Feature {name!r} has shape {value.shape}, expected '
        f'({local_batch_size}, {sequence_length}) = (BATCH_SIZE / '
        'processes, SEQUENCE_LENGTH).'
      )


@gin.configurable
@settings_lib.keyword_parameters
def train(settings: TrainSettings) -> TrainResult:
  """Trains (or resumes training) and returns the final state.

  Called with `TrainSettings`' fields as keyword arguments (`train(model_dir=..., ...)`), which
  is how gin binds them (`train.model_dir = %MODEL_DIR`); the fields say what each one does.

  Returns:
    The final step, state and logged metrics.
  """
  settings_check.check_train_settings(settings)  # Settings first: nothing is written before.
  with run_lock.held(settings.model_dir):  # Then MODEL_DIR's lock, before anything else.
    parts = _build(settings)
    hooks = _make_hooks(settings, parts)
    step, state = _loop(settings, parts, hooks)
    if jax.process_index() == 0:
      log = hooks.log
      console.log_run_summary(
        step=step,
        total_steps=settings.train_steps,
        seconds=hooks.progress.elapsed(),
        metrics=log.history[-1][1] if log.history else None,
        model_dir=settings.model_dir,
        checkpoint_step=hooks.save.saved_step,
        stopped=step < settings.train_steps,
      )
  return TrainResult(step=step, state=state, history=hooks.log.history)


@dataclasses.dataclass
class _Parts:
  """What `_build` makes for the loop: the model's config, its data, state and step."""

  config: model_lib.ModelConfig
  checkpointer: checkpointing.Checkpointer
  train_iter: distributed.ShardedIterator
  run_info: dict[str, Any]
  state: State | None  # None once `_loop` has taken it.
  start_step: int
  step_fn: Callable[[State, Mapping[str, jax.Array]], tuple[State, dict[str, jax.Array]]]
  evaluate: train_hooks.EvalFn | None


def _run_info(s: TrainSettings) -> dict[str, Any]:
  """What a checkpoint records of the data it was trained on, checked again on resume."""
  return {
    'task': s.task,
    'sequence_length': s.sequence_length,
    'batch_size': s.batch_size,
    'pack': s.pack,
    'data_seed': s.order_seed,
    'input_shards': distributed.input_shards(),
  }


def _build(s: TrainSettings) -> _Parts:
  """The model, checkpointer and data; the state restored or initialised; the jitted step."""
  info = data_lib.task_info(s.task)
  config = sizing.model_config_for_task(s.model, info, s.sequence_length)
  decoder = model_lib.Decoder(config)
  rules = sharding.logical_axis_rules()
  checkpointer = checkpointing.Checkpointer(epath.Path(s.model_dir) / 'checkpoints', s.checkpoint)
  run_info = _run_info(s)
  init, abstract_state, state_shardings = train_state.abstract_state_and_shardings(
    decoder, s.optimizer.transform, s.mesh, rules
  )
  train_iter = create_train_iterator(
    s.task,
    sequence_length=s.sequence_length,
    global_batch_size=s.batch_size,
    seed=s.order_seed,
    pack=s.pack,
  )
  with jax.set_mesh(s.mesh):
    state = _restore_or_initialize(
      checkpointer,
      init,
      abstract_state,
      state_shardings,
      s.optimizer.transform,
      train_iter,
      run_info,
      s.seed,
      s.init_checkpoint,
    )
  start_step = int(jax.device_get(state['step']))
  evaluate = None
  if s.eval_every_steps:
    evaluate = s.make_evaluator(s.task, config, s.sequence_length, s.model_dir)
  # Every configurable has been called by now, so the operative config is complete.
  gin_utils.write_operative_config(s.model_dir)
  logging.info(
    'Model: %s; %d parameters; mesh %s.',
    config,
    sum(x.size for x in jax.tree.leaves(abstract_state['params'])),
    dict(s.mesh.shape),
  )
  step_fn = train_state.jit_train_step(
    decoder,
    s.optimizer.transform,
    s.optimizer.schedule,
    rules,
    s.mesh,
    state_shardings,
    pause_id=info.pause_id,
    dropout_seed=s.seed,
    z_loss=s.z_loss,
    num_microbatches=s.num_microbatches,
  )
  return _Parts(config, checkpointer, train_iter, run_info, state, start_step, step_fn, evaluate)


@dataclasses.dataclass
class _Hooks:
  """What runs after each step, in order, and the parts of it the loop and summary read."""

  writer: metric_writers.MetricWriter
  progress: console.ProgressReporter
  buffer: train_hooks.MetricsBuffer
  log: train_hooks.LogMetrics
  save: train_hooks.SaveCheckpoint
  all: list[Callable[..., None]]


def _make_hooks(s: TrainSettings, parts: _Parts) -> _Hooks:
  """Metrics, evaluation and profiling, then the checkpoint save (last: it saves what the
  others have checked)."""
  # Its logging part is a library's INFO: shown with --logger_levels=clu:INFO.
  writer = metric_writers.create_default_writer(s.model_dir, just_logging=jax.process_index() > 0)
  progress = console.ProgressReporter(s.train_steps, enabled=jax.process_index() == 0)
  buffer = train_hooks.MetricsBuffer()
  throughput = train_hooks.Throughput(parts.start_step)
  tokens_per_step = s.batch_size * s.sequence_length
  log = train_hooks.LogMetrics(
    buffer,
    throughput,
    writer,
    progress,
    parts.checkpointer,
    every_steps=s.log_every_steps,
    tokens_per_step=tokens_per_step,
    flops_per_step=parts.config.flops_per_token(s.sequence_length) * tokens_per_step,
    peak_flops=train_state.peak_flops(s.peak_flops_per_device),
    extra_metrics=lambda: data_lib.check_truncation(s.task),
  )
  save = train_hooks.SaveCheckpoint(parts.checkpointer, buffer, parts.train_iter, parts.run_info)
  hooks = [log]
  if parts.evaluate:
    hooks.append(train_hooks.Evaluate(parts.evaluate, s.eval_every_steps, writer, throughput))
  if s.profile_every_steps and jax.process_index() == 0:
    hooks.append(train_hooks.Profile(s.model_dir, s.profile_every_steps))
  hooks.append(save)
  return _Hooks(writer, progress, buffer, log, save, hooks)


def _loop(s: TrainSettings, parts: _Parts, hooks: _Hooks) -> tuple[int, State]:
  """Steps to `train_steps` (or a SIGTERM), then closes the writer and the checkpointer.

  Returns:
    The step reached and the state at it.
  """
  watcher = checkpointing.PreemptionWatcher(parts.checkpointer)
  step, state = parts.start_step, parts.state
  parts.state = None  # The loop's from here on (the first step is donated it).
  try:
    with jax.set_mesh(s.mesh):
      while step < s.train_steps:
        local_batch = next(parts.train_iter)
        if step == parts.start_step:
          check_batch(local_batch, s.batch_size // jax.process_count(), s.sequence_length)
        state, metrics = parts.step_fn(state, sharding.make_global_batch(local_batch, s.mesh))
        step += 1
        hooks.buffer.add(step, metrics)
        preempted = watcher.reached(step)
        for hook in hooks.all:
          hook(step, state, last=step == s.train_steps or preempted)
        if preempted:
          logging.warning(
            'Stopped at step %d after SIGTERM; checkpoint saved. Rerun the same command to resume.',
            step,
          )
          break
  finally:
    watcher.close()
    hooks.writer.flush()
    hooks.writer.close()
    # Lets an in-flight save of a good state finish even when a step failed.
    parts.checkpointer.wait_until_finished()
    parts.checkpointer.close()
  return step, state


def _restore_or_initialize(
  checkpointer: checkpointing.Checkpointer,
  init: Callable[[jax.Array], State],
  abstract_state: State,
  state_shardings: State,
  optimizer: optax.GradientTransformation,
  train_iter: clu_iterator.DatasetIterator,
  run_info: Mapping[str, Any],
  seed: int,
  init_checkpoint: str | None,
) -> State:
  """Resumes from the run's newest intact checkpoint, else INIT_CHECKPOINT, else random."""
  resumed = checkpointer.latest_intact(abstract_state, train_iter, run_info)
  if resumed is not None:
    logging.info(
      'Resuming from %s/%d%s.',
      checkpointer.directory,
      resumed[0],
      ' (INIT_CHECKPOINT is ignored on resume)' if init_checkpoint else '',
    )
    return resumed[1]
  if init_checkpoint:
    params = checkpointing.load_params(
      init_checkpoint,
      abstract_state['params'],
      initial_params=lambda: jax.jit(init, out_shardings=state_shardings)(jax.random.key(seed))[
        'params'
      ],
    )
    fresh = jax.jit(
      lambda p: {'step': jnp.zeros((), jnp.int32), 'params': p, 'opt_state': optimizer.init(p)},
      out_shardings=state_shardings,
      donate_argnums=(0,),
    )
    return fresh(params)
  return jax.jit(init, out_shardings=state_shardings)(jax.random.key(seed))
