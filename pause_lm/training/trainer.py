"""The training loop: one jitted, sharded step; Orbax resume; hooks for the rest.

Read `train` top to bottom: it gets the model, optimizer, mesh and checkpoint
settings as arguments (the run file wires them: `train.model = @ModelConfig()`),
builds the input pipeline, restores (or initialises) the state, then steps. What
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
from pause_lm.model import transformer as model_lib
from pause_lm.training import optimizer as optimizer_lib
from pause_lm.runtime import run_lock
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
    return clu_iterator.TfDatasetIterator(dataset, checkpoint=True)

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


# Builds the evaluation a run does every EVAL_EVERY_STEPS steps, from (task, model config,
# sequence length, model_dir); `evaluation.periodic_evaluator` is one.
MakeEvaluator = Callable[[str, model_lib.ModelConfig, int, str], train_hooks.EvalFn]


@gin.configurable
@settings_check.validated  # Settings first: nothing is written before.
@run_lock.exclusive  # Then MODEL_DIR's lock, before anything else.
def train(
  model_dir: str = gin.REQUIRED,
  task: str = gin.REQUIRED,
  train_steps: int = gin.REQUIRED,
  sequence_length: int = gin.REQUIRED,
  batch_size: int = gin.REQUIRED,
  model: model_lib.ModelConfig = gin.REQUIRED,
  optimizer: optimizer_lib.Optimizer = gin.REQUIRED,
  mesh: jax.sharding.Mesh = gin.REQUIRED,
  checkpoint: checkpointing.CheckpointConfig = checkpointing.CheckpointConfig(),
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
  make_evaluator: MakeEvaluator | None = None,
) -> TrainResult:
  """Trains (or resumes training) and returns the final state.

  Args:
    model_dir: Output folder: checkpoints/, TensorBoard files, config.gin. A
      folder that already holds checkpoints is resumed from the latest.
    task: Registered SeqIO task to train on.
    train_steps: Total optimizer steps (a resumed run continues to it).
    sequence_length: Tokens per example.
    batch_size: Global batch size in examples, over all processes.
    model: The decoder; an unset `num_embeddings` is sized from the task.
    optimizer: The update rule and its schedule (`optimizer.create_optimizer`).
    mesh: The device mesh (`sharding.create_mesh`).
    checkpoint: When checkpoints are written and how many are kept.
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
    eval_every_steps: Evaluate every this many steps and at the end; None never does.
    make_evaluator: Builds that evaluation (`train.make_evaluator =
      @periodic_evaluator` in gin/stdft.gin); needed when eval_every_steps is set.

  Returns:
    The final step, state and logged metrics.
  """
  data_seed = seed if data_seed is None else data_seed
  info = data_lib.task_info(task)
  config = train_state.model_config_for_task(model, info, sequence_length)
  decoder = model_lib.Decoder(config)
  rules = sharding.logical_axis_rules()
  checkpointer = checkpointing.Checkpointer(epath.Path(model_dir) / 'checkpoints', checkpoint)
  run_info = {
    'task': task,
    'sequence_length': sequence_length,
    'batch_size': batch_size,
    'pack': pack,
    'data_seed': data_seed,
    'input_shards': distributed.input_shards(),
  }

  init, abstract_state, state_shardings = train_state.abstract_state_and_shardings(
    decoder, optimizer.transform, mesh, rules
  )
  train_iter = create_train_iterator(
    task, sequence_length=sequence_length, global_batch_size=batch_size, seed=data_seed, pack=pack
  )
  with jax.set_mesh(mesh):
    state = _restore_or_initialize(
      checkpointer,
      init,
      abstract_state,
      state_shardings,
      optimizer.transform,
      train_iter,
      run_info,
      seed,
      init_checkpoint,
    )
  start_step = int(jax.device_get(state['step']))
  evaluate = make_evaluator(task, config, sequence_length, model_dir) if eval_every_steps else None
  # Every configurable has been called by now, so the operative config is
  # complete.
  gin_utils.write_operative_config(model_dir)
  logging.info(
    'Model: %s; %d parameters; mesh %s.',
    config,
    sum(x.size for x in jax.tree.leaves(abstract_state['params'])),
    dict(mesh.shape),
  )
  step_fn = train_state.jit_train_step(
    decoder,
    optimizer.transform,
    optimizer.schedule,
    rules,
    mesh,
    state_shardings,
    pause_id=info.pause_id,
    dropout_seed=seed,
    z_loss=z_loss,
    num_microbatches=num_microbatches,
  )

  # Its logging part is a library's INFO: shown with --logger_levels=clu:INFO.
  writer = metric_writers.create_default_writer(model_dir, just_logging=jax.process_index() > 0)
  progress = console.ProgressReporter(train_steps, enabled=jax.process_index() == 0)
  buffer = train_hooks.MetricsBuffer()
  throughput = train_hooks.Throughput(start_step)
  tokens_per_step = batch_size * sequence_length
  log = train_hooks.LogMetrics(
    buffer,
    throughput,
    writer,
    progress,
    checkpointer,
    every_steps=log_every_steps,
    tokens_per_step=tokens_per_step,
    flops_per_step=config.flops_per_token(sequence_length) * tokens_per_step,
    peak_flops=train_state.peak_flops(peak_flops_per_device),
    extra_metrics=lambda: data_lib.check_truncation(task),
  )
  save = train_hooks.SaveCheckpoint(checkpointer, buffer, train_iter, run_info)
  hooks = [log]
  if evaluate:
    hooks.append(train_hooks.Evaluate(evaluate, eval_every_steps, writer, throughput))
  if profile_every_steps and jax.process_index() == 0:
    hooks.append(train_hooks.Profile(model_dir, profile_every_steps))
  hooks.append(save)  # Last: it saves what the others have checked.

  watcher = checkpointing.PreemptionWatcher(checkpointer)
  step = start_step
  try:
    with jax.set_mesh(mesh):
      while step < train_steps:
        local_batch = next(train_iter)
        if step == start_step:
          check_batch(local_batch, batch_size // jax.process_count(), sequence_length)
        state, metrics = step_fn(state, sharding.make_global_batch(local_batch, mesh))
        step += 1
        buffer.add(step, metrics)
        preempted = watcher.reached(step)
        for hook in hooks:
          hook(step, state, last=step == train_steps or preempted)
        if preempted:
          logging.warning(
            'Stopped at step %d after SIGTERM; checkpoint saved. Rerun the same command to resume.',
            step,
          )
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
      step=step,
      total_steps=train_steps,
      seconds=progress.elapsed(),
      metrics=log.history[-1][1] if log.history else None,
      model_dir=model_dir,
      checkpoint_step=save.saved_step,
      stopped=step < train_steps,
    )
  return TrainResult(step=step, state=state, history=log.history)


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
