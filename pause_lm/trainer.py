"""The training loop: one jitted, sharded step; Orbax resume; CLU metrics.

Read `train` top to bottom: it builds the mesh, model, optimizer and input
pipeline from gin, restores (or initialises) the state, then runs the step.
Everything the step needs to be exactly resumable is in the checkpoint: the
state (its `step` also seeds dropout) and the input iterator's position.

Host-device syncs are kept off the per-step path: per-step metrics stay on the
device and are fetched at log and save steps, which is also where a non-finite
loss or gradient is caught (before any checkpoint of the bad state is written).
"""

from collections.abc import Callable, Mapping
import dataclasses
import logging
import math
import time
from typing import Any

from clu import metric_writers
from clu import periodic_actions
from clu.data import dataset_iterator as clu_iterator
from etils import epath
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax

from pause_lm import checkpointing
from pause_lm import console
from pause_lm import data as data_lib
from pause_lm import distributed
from pause_lm import evaluation
from pause_lm import gin_utils
from pause_lm import model as model_lib
from pause_lm import optimizer as optimizer_lib
from pause_lm import run_lock
from pause_lm import settings_check
from pause_lm import sharding
from pause_lm import train_state
from pause_lm.train_state import State


class NonFiniteError(FloatingPointError):
  """Loss or gradient norm became NaN or infinite."""


@dataclasses.dataclass
class TrainResult:
  """What `train` hands back: the final state and the logged metrics."""
  step: int
  state: State
  history: list[tuple[int, dict[str, float]]]


def create_train_iterator(task: str, *, sequence_length: int,
                          global_batch_size: int, seed: int,
                          pack: bool) -> distributed.ShardedIterator:
  """This process's shards of the training data, as a checkpointable iterator.

  Each process reads only its own SeqIO shards (`distributed.input_shards`,
  one per process by default) and stacks them into its rows of the batch.
  No Python-side prefetching: the iterator's saved position must be the next
  batch the step will see (tf.data's own prefetch buffer is saved with it).
  """
  num_shards = distributed.input_shards()
  if global_batch_size % num_shards:
    raise ValueError(f'BATCH_SIZE={global_batch_size} must split evenly over '
                     f'{num_shards} input shards.')

  def make_shard(shard_id):
    dataset = data_lib.get_dataset(
        task, 'train', sequence_length=sequence_length,
        batch_size=global_batch_size // num_shards, shuffle=True, seed=seed,
        shard_id=shard_id, num_shards=num_shards, repeat=True, pack=pack)
    return clu_iterator.TfDatasetIterator(dataset, checkpoint=True)

  return distributed.ShardedIterator(
      make_shard, distributed.local_shard_ids(num_shards), num_shards)


def check_batch(batch: Mapping[str, np.ndarray], local_batch_size: int,
                sequence_length: int) -> None:
  """Fails on the first batch if the pipeline does not give the model's input."""
  missing = [k for k in train_state.REQUIRED_FEATURES if k not in batch]
  if missing:
    raise ValueError(f'The input pipeline gives {sorted(batch)} but the '
                     f'trainer needs {missing} as well.')
  for name, value in batch.items():
    if value.shape != (local_batch_size, sequence_length):
      raise ValueError(
          f'Feature {name!r} has shape {value.shape}, expected '
          f'({local_batch_size}, {sequence_length}) = (BATCH_SIZE / '
          'processes, SEQUENCE_LENGTH).')


class _MetricsBuffer:
  """Per-step metrics kept on device until a log or save step needs them."""

  def __init__(self):
    self._device: list[tuple[int, dict[str, jax.Array]]] = []
    self._host: list[tuple[int, dict[str, float]]] = []

  def add(self, step: int, metrics: dict[str, jax.Array]) -> None:
    self._device.append((step, metrics))

  def check_finite(self, last_good_checkpoint: int | None) -> None:
    """Moves metrics to the host; raises on the first non-finite step."""
    fetched = jax.device_get(self._device)
    self._device = []
    for step, metrics in fetched:
      metrics = {k: float(v) for k, v in metrics.items()}
      if not (math.isfinite(metrics['loss']) and
              math.isfinite(metrics['grad_norm'])):
        raise NonFiniteError(
            f'Step {step}: loss={metrics["loss"]}, grad_norm='
            f'{metrics["grad_norm"]}. Training stopped without saving this '
            f'state; the last good checkpoint is step {last_good_checkpoint}. '
            'Lower the learning rate (or raise warmup), then restart: the run '
            'resumes from that checkpoint.')
      self._host.append((step, metrics))

  def summarize(self) -> dict[str, float]:
    """Means since the last summary (token counts are summed)."""
    rows = [m for _, m in self._host]
    self._host = []
    summary = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    summary['weighted_tokens'] = float(sum(r['weighted_tokens'] for r in rows))
    return summary


@gin.configurable(denylist=['mesh'])
@settings_check.validated  # Settings first: nothing is written before.
@run_lock.exclusive  # Then MODEL_DIR's lock, before anything else.
def train(
    model_dir: str = gin.REQUIRED,
    task: str = gin.REQUIRED,
    train_steps: int = gin.REQUIRED,
    sequence_length: int = gin.REQUIRED,
    batch_size: int = gin.REQUIRED,
    seed: int = 0,
    data_seed: int | None = None,
    pack: bool = False,
    init_checkpoint: str | None = None,
    z_loss: float = 0.0,
    num_microbatches: int = 1,
    log_every_steps: int = 100,
    peak_flops_per_device: float | None = None,
    profile_every_steps: int | None = None,
    eval_every_steps: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> TrainResult:
  """Trains (or resumes training) and returns the final state.

  Args:
    model_dir: Output folder: checkpoints/, TensorBoard files, config.gin. A
      folder that already holds checkpoints is resumed from the latest.
    task: Registered SeqIO task to train on.
    train_steps: Total optimizer steps (a resumed run continues to it).
    sequence_length: Tokens per example.
    batch_size: Global batch size in examples, over all processes.
    seed: Seeds parameter initialisation and dropout.
    data_seed: Seeds the data order; defaults to `seed`.
    pack: Pack several examples per row (finetuning on short examples).
    init_checkpoint: Start from these parameters (a MODEL_DIR, its
      checkpoints/ folder or one step folder) with a fresh optimizer at step
      0. Ignored when model_dir already holds checkpoints (that is a resume).
    z_loss: Coefficient of the z-loss; 0 disables it.
    num_microbatches: Split each batch into this many sequential microbatches
      whose gradients are summed (same result, less activation memory).
    log_every_steps: Write metrics every this many steps.
    peak_flops_per_device: Peak FLOP/s of one device, for MFU. Looked up from
      the device kind when unset (accelerators only).
    profile_every_steps: Capture a profiler trace every this many steps.
    eval_every_steps: Evaluate the task (`evaluation.periodic_evaluator`,
      gin-configured) every this many steps and at the end; None never does.
    mesh: The device mesh; `sharding.create_mesh()` (gin-configured) if None.

  Returns:
    The final step, state and logged metrics.
  """
  data_seed = seed if data_seed is None else data_seed
  info = data_lib.task_info(task)
  config = train_state.model_config_for_task(info, sequence_length)
  model = model_lib.Decoder(config)
  mesh = mesh or sharding.create_mesh()
  rules = sharding.logical_axis_rules()
  sharding.check_batch_size(batch_size, mesh, num_microbatches)
  optimizer, schedule = optimizer_lib.create_optimizer()
  checkpointer = checkpointing.Checkpointer(
      epath.Path(model_dir) / 'checkpoints', checkpointing.CheckpointConfig())
  run_info = {'task': task, 'sequence_length': sequence_length,
              'batch_size': batch_size, 'pack': pack, 'data_seed': data_seed,
              'input_shards': distributed.input_shards()}

  init, abstract_state, state_shardings = train_state.abstract_state_and_shardings(
      model, optimizer, mesh, rules)
  train_iter = create_train_iterator(
      task, sequence_length=sequence_length, global_batch_size=batch_size,
      seed=data_seed, pack=pack)
  with jax.set_mesh(mesh):
    state = _restore_or_initialize(
        checkpointer, init, abstract_state, state_shardings, optimizer,
        train_iter, run_info, seed, init_checkpoint)
  start_step = int(jax.device_get(state['step']))
  evaluator = evaluation.periodic_evaluator(
      task, config, sequence_length, model_dir) if eval_every_steps else None
  # Every configurable has been called by now, so the operative config is
  # complete.
  gin_utils.write_operative_config(model_dir)
  logging.info('Model: %s; %d parameters; mesh %s.', config,
               sum(x.size for x in jax.tree.leaves(abstract_state['params'])),
               dict(mesh.shape))

  step_fn = train_state.jit_train_step(
      model, optimizer, schedule, rules, mesh, state_shardings,
      pause_id=info.pause_id, dropout_seed=seed, z_loss=z_loss,
      num_microbatches=num_microbatches)

  # Its logging part is a library's INFO: shown with --logger_levels=clu:INFO.
  writer = metric_writers.create_default_writer(
      model_dir, just_logging=jax.process_index() > 0)
  progress = console.ProgressReporter(train_steps,
                                      enabled=jax.process_index() == 0)
  hooks = []
  if profile_every_steps and jax.process_index() == 0:
    hooks.append(periodic_actions.Profile(
        logdir=model_dir, every_steps=profile_every_steps, every_secs=None))
  watcher = checkpointing.PreemptionWatcher(checkpointer)
  buffer = _MetricsBuffer()
  history = []
  tokens_per_step = batch_size * sequence_length
  flops_per_step = config.flops_per_token(sequence_length) * tokens_per_step
  device_peak = train_state.peak_flops(peak_flops_per_device)
  timer = (None, start_step)  # (time, step) when throughput was last measured

  step = start_step
  saved_step = checkpointer.latest_step()
  try:
    with jax.set_mesh(mesh):
      while step < train_steps:
        local_batch = next(train_iter)
        if step == start_step:
          check_batch(local_batch, batch_size // jax.process_count(),
                      sequence_length)
        state, metrics = step_fn(state,
                                 sharding.make_global_batch(local_batch, mesh))
        step += 1
        buffer.add(step, metrics)
        for hook in hooks:
          hook(step)
        if timer[0] is None:  # Exclude compilation from the throughput.
          jax.block_until_ready(metrics)
          timer = (time.perf_counter(), step)

        preempted = watcher.reached(step)
        last = step == train_steps or preempted
        if step % log_every_steps == 0 or last:
          buffer.check_finite(checkpointer.latest_step())
          summary = buffer.summarize()
          summary.update(data_lib.check_truncation(task))
          now = time.perf_counter()
          if step > timer[1]:
            steps_per_sec = (step - timer[1]) / (now - timer[0])
            summary['steps_per_sec'] = steps_per_sec
            summary['tokens_per_sec'] = steps_per_sec * tokens_per_step
            if device_peak:
              summary['mfu'] = (steps_per_sec * flops_per_step /
                                (device_peak * jax.device_count()))
          timer = (now, step)
          writer.write_scalars(step, summary)
          history.append((step, summary))
          progress.report(step, summary)
        if evaluator and (step % eval_every_steps == 0 or last):
          writer.write_scalars(step, evaluator(state['params'], step))
          timer = (time.perf_counter(), step)  # Not in the training throughput.
        checkpointer.check_background_save()
        if checkpointer.should_save(step) or last:
          buffer.check_finite(checkpointer.latest_step())
          checkpointer.save(step, state, train_iter, run_info)
          saved_step = step
        if preempted:
          logging.warning('Stopped at step %d after SIGTERM; checkpoint '
                          'saved. Rerun the same command to resume.', step)
          break
  finally:
    watcher.close()
    writer.flush()
    writer.close()
    # Lets an in-flight save of a good state finish even when a step failed.
    checkpointer.wait_until_finished()
    checkpointer.close()
  if jax.process_index() == 0:
    console.log_run_summary(
        step=step, total_steps=train_steps, seconds=progress.elapsed(),
        metrics=history[-1][1] if history else None, model_dir=model_dir,
        checkpoint_step=saved_step, stopped=step < train_steps)
  return TrainResult(step=step, state=state, history=history)


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
    logging.info('Resuming from %s/%d%s.', checkpointer.directory, resumed[0],
                 ' (INIT_CHECKPOINT is ignored on resume)'
                 if init_checkpoint else '')
    return resumed[1]
  if init_checkpoint:
    params = checkpointing.load_params(
        init_checkpoint, abstract_state['params'],
        initial_params=lambda: jax.jit(init, out_shardings=state_shardings)(
            jax.random.key(seed))['params'])
    fresh = jax.jit(
        lambda p: {'step': jnp.zeros((), jnp.int32), 'params': p,
                   'opt_state': optimizer.init(p)},
        out_shardings=state_shardings, donate_argnums=(0,))
    return fresh(params)
  return jax.jit(init, out_shardings=state_shardings)(jax.random.key(seed))

