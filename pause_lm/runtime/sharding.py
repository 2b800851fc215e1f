"""Device mesh, logical-axis rules and array shardings for training.

One mesh with axes (data, fsdp, tensor) serves every setting: pure data
parallelism (the default: all devices on `data`), FSDP (parameters split over
`fsdp`, batch over `data` x `fsdp`), and tensor parallelism (heads/MLP/vocab
over `tensor`). The model names its parameter axes ('embed', 'heads', ...) and,
separately, its activation axes ('activation_batch', 'activation_embed', ...), as
MaxText does; the rules below map those names onto mesh axes, so
changing the parallelism is a gin binding, never a model change. The same code
serves a single CPU, simulated CPU devices and multi-host pods: batches are
assembled from each process's own rows with `make_array_from_process_local_data`.
"""

from collections.abc import Mapping, Sequence
import math
from typing import Any

import flax.linen as nn
import gin
import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

MESH_AXES = ('data', 'fsdp', 'tensor')
# Mesh axes the batch dimension is split over.
BATCH_AXES = ('data', 'fsdp')

# Parameters and activations have their own names, so no array holds two names that want
# the same mesh axis and the rules' order does not matter.
DEFAULT_RULES = (
  # Parameters: FSDP splits them over `fsdp`, Megatron-style tensor parallelism over
  # `tensor`.
  ('embed', 'fsdp'),
  ('vocab', 'tensor'),
  ('heads', 'tensor'),
  ('mlp', 'tensor'),
  # Key/value heads of grouped-query attention stay whole: there may be fewer of them than
  # tensor shards (one, for multi-query). Bind ('kv_heads', 'tensor') when they divide evenly.
  ('kv_heads', None),
  ('kv', None),
  ('layers', None),
  # Activations: rows over every batch axis, features whole except where tensor
  # parallelism splits the matmul they come from.
  ('activation_batch', BATCH_AXES),
  ('activation_length', None),
  ('activation_embed', None),
  ('activation_heads', 'tensor'),
  ('activation_kv_heads', None),
  ('activation_kv', None),
  ('activation_mlp', 'tensor'),
  ('activation_vocab', 'tensor'),
)

LogicalRules = Sequence[tuple[str, str | Sequence[str] | None]]


@gin.configurable
def create_mesh(
  data: int = -1,
  fsdp: int = 1,
  tensor: int = 1,
  devices: Sequence[jax.Device] | None = None,
) -> Mesh:
  """Builds the (data, fsdp, tensor) mesh; one axis may be -1 for "the rest".

  Args:
    data: Data-parallel size (batch split, parameters replicated).
    fsdp: Fully-sharded data-parallel size (batch and parameters split).
    tensor: Tensor-parallel size (heads, MLP and vocabulary split).
    devices: Devices to use; all of them by default.

  Returns:
    A mesh over all given devices.

  Raises:
    ValueError: The sizes do not multiply to the number of devices.
  """
  devices = list(jax.devices() if devices is None else devices)
  sizes = [data, fsdp, tensor]
  if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise ValueError(
      f'Mesh sizes (data={data}, fsdp={fsdp}, tensor={tensor}) must be '
      'positive, with at most one -1 ("use the remaining devices"); set '
      'them with --gin.create_mesh.data=... etc.'
    )
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(
        f'{len(devices)} devices cannot be split into a mesh with '
        f'data={data}, fsdp={fsdp}, tensor={tensor}: {known} does not divide '
        f'{len(devices)}. Change the create_mesh sizes.'
      )
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(
      f'Mesh data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} needs '
      f'{math.prod(sizes)} devices but {len(devices)} are available. Set one '
      'create_mesh size to -1 to use the rest.'
    )
  return jax.make_mesh(
    tuple(sizes),
    MESH_AXES,
    axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES),
    devices=devices,
  )


@gin.configurable
def logical_axis_rules(rules: LogicalRules = DEFAULT_RULES) -> LogicalRules:
  """The logical-to-mesh rules in force; rebind in gin to change them."""
  return tuple((name, tuple(axes) if isinstance(axes, list) else axes) for name, axes in rules)


def logical_to_shardings(logical_specs: Any, mesh: Mesh, rules: LogicalRules) -> Any:
  """Maps a tree of logical PartitionSpecs to NamedShardings on `mesh`."""
  return nn.logical_to_mesh_sharding(logical_specs, mesh, rules)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batches are split along their first axis over data x fsdp."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_shards(mesh: Mesh) -> int:
  """How many ways the global batch is split."""
  return math.prod(mesh.shape[a] for a in BATCH_AXES)


def check_batch_size(global_batch_size: int, mesh: Mesh, num_microbatches: int = 1) -> None:
  """Fails early, with the fix, when the batch cannot be split evenly."""
  shards = batch_shards(mesh)
  per_microbatch, rest = divmod(global_batch_size, num_microbatches)
  if rest:
    raise ValueError(
      f'BATCH_SIZE={global_batch_size} is not divisible by '
      f'num_microbatches={num_microbatches}; change either.'
    )
  if per_microbatch % shards:
    raise ValueError(
      f'Each microbatch of {per_microbatch} rows (BATCH_SIZE='
      f'{global_batch_size} / {num_microbatches} microbatches) must split '
      f'evenly over the {shards} batch shards (data={mesh.shape["data"]} x '
      f'fsdp={mesh.shape["fsdp"]}); set --gin.BATCH_SIZE to a multiple of '
      f'{shards * num_microbatches}.'
    )
  if global_batch_size % jax.process_count():
    raise ValueError(
      f'BATCH_SIZE={global_batch_size} must split evenly over {jax.process_count()} processes.'
    )


def make_global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles the global batch from this process's rows."""
  sharding = batch_sharding(mesh)
  return {
    name: jax.make_array_from_process_local_data(sharding, value)
    for name, value in local_batch.items()
  }
