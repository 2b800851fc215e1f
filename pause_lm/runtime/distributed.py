"""Multi-controller start-up and the split of the input pipeline over processes.

Every host runs the same program; `initialize` connects them through JAX's
coordination service before anything touches a device. Where the settings
come from, in order:

* `--coordinator_address`, `--num_processes`, `--process_id` (defaulting to
  the environment variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
  JAX_PROCESS_ID): GPU clusters without a scheduler, and loopback CPU runs;
  `python -m pause_lm.train` defines these flags (and `--distributed`) and passes
  them to `initialize`: importing the library defines none;
* SLURM (`srun` sets SLURM_NTASKS etc.) and multi-host TPU slices: JAX
  detects them itself;
* otherwise one process and no coordination service.

Multi-process CPU runs need the gloo collectives (the default CPU client has
no cross-process all-reduce); they are switched on here, which leaves GPU and
TPU backends alone.

The input is split into `input_shards` SeqIO shards, by default one per
process. A process reads only its own shards and concatenates them into its
rows of the global batch. The data position is saved per shard, not per
process, so a run can resume on a different number of processes as long as
the shard count stays the same: a checkpoint written by two hosts continues
on one host with exactly the batches the two would have seen.
"""

from collections.abc import Callable, Sequence
import os

from absl import logging
from clu.data import dataset_iterator as clu_iterator
from etils import epath
import gin
import jax
import numpy as np


def _env_int(name: str) -> int | None:
  value = os.environ.get(name)
  return int(value) if value else None


def _cluster_detected() -> bool:
  """SLURM job steps with several tasks, or a TPU slice with several hosts."""
  if int(os.environ.get('SLURM_NTASKS', '1')) > 1 and 'SLURM_PROCID' in os.environ:
    return True
  return ',' in os.environ.get('TPU_WORKER_HOSTNAMES', '')


def initialize(
  mode: str = 'auto',
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
) -> bool:
  """Connects this process to the others; call before any jax computation.

  Args:
    mode: 'auto', 'on' or 'off' (see train.py's --distributed flag).
    coordinator_address: host:port of process 0; env JAX_COORDINATOR_ADDRESS.
    num_processes: Total processes; env JAX_NUM_PROCESSES.
    process_id: This process's index; env JAX_PROCESS_ID.

  Returns:
    Whether jax.distributed was initialised.
  """
  coordinator_address = coordinator_address or os.environ.get('JAX_COORDINATOR_ADDRESS')
  num_processes = num_processes or _env_int('JAX_NUM_PROCESSES')
  if process_id is None:
    process_id = _env_int('JAX_PROCESS_ID')
  if mode == 'off' or (mode == 'auto' and not coordinator_address and not _cluster_detected()):
    return False
  if jax.distributed.is_initialized():
    return True
  # Only the CPU client reads this; without it cross-process CPU collectives
  # fail at the first all-reduce.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(
    coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
  )
  logging.info(
    'Process %d of %d; %d local of %d devices.',
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )
  return True


@gin.configurable
def input_shards(num_shards: int | None = None) -> int:
  """How many SeqIO shards the training input is split into.

  Args:
    num_shards: Fixed shard count; None means one per process. Fix it when a
      run may resume on a different number of processes (it must stay a
      multiple of every process count used).

  Returns:
    The shard count.
  """
  num_shards = num_shards or jax.process_count()
  if num_shards % jax.process_count():
    raise ValueError(
      f'input_shards.num_shards={num_shards} must be a multiple of the '
      f'{jax.process_count()} processes: each reads the same number of '
      'shards. The data position is saved per shard, so keep the value the '
      'checkpoint was written with and change the process count instead.'
    )
  return num_shards


def local_shard_ids(num_shards: int) -> range:
  """The contiguous shards this process reads (its rows of the batch)."""
  per_process = num_shards // jax.process_count()
  start = jax.process_index() * per_process
  return range(start, start + per_process)


class ShardedIterator(clu_iterator.DatasetIterator):
  """This process's shards, batch by batch concatenated along the rows.

  Each shard's position is saved in its own file, named by shard rather than
  by process, so any process count that divides the shard count restores it.
  """

  def __init__(
    self,
    make_shard: Callable[[int], clu_iterator.DatasetIterator],
    shard_ids: Sequence[int],
    num_shards: int,
  ):
    self._shard_ids = list(shard_ids)
    self._num_shards = num_shards
    self._iterators = [make_shard(i) for i in self._shard_ids]

  def __next__(self) -> dict[str, np.ndarray]:
    parts = [next(it) for it in self._iterators]
    if len(parts) == 1:
      return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  def get_next(self):
    return next(self)

  def reset(self):
    for it in self._iterators:
      it.reset()

  @property
  def element_spec(self):
    return self._iterators[0].element_spec

  def filenames(self, directory: epath.PathLike) -> list[epath.Path]:
    directory = epath.Path(directory)
    return [directory / f'shard_{i}-of-{self._num_shards}' for i in self._shard_ids]

  def save(self, directory: epath.PathLike) -> None:
    epath.Path(directory).mkdir(parents=True, exist_ok=True)
    for it, path in zip(self._iterators, self.filenames(directory)):
      it.save(path)

  def restore(self, directory: epath.PathLike) -> None:
    for it, path in zip(self._iterators, self.filenames(directory)):
      if not (path.parent / (path.name + '.index')).exists():
        raise FileNotFoundError(
          f'No input position for shard {path.name} in {directory}: the '
          'checkpoint was written with a different input shard count. '
          'Resume with the --gin.input_shards.num_shards it used.'
        )
      it.restore(path)
