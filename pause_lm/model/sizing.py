"""A model's size: its embedding table fitted to a task, and its parameter shapes unallocated.

Training, evaluation, the AOT check, `summary` and `convert` all size the decoder this way;
it lives with the model, not with training, so that evaluation and the commands that only
measure a model need nothing of the training package (tests/test_layering.py).
"""

import dataclasses
from typing import Any, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp

from pause_lm.model import transformer as model_lib
from pause_lm.runtime import sharding


class TaskSizes(Protocol):
  """What sizing needs from a task (`pause_lm.pipeline.datasets.TaskInfo` has it)."""

  name: str
  vocab_size: int
  num_embeddings: int


def model_config_for_task(
  config: model_lib.ModelConfig, info: TaskSizes, sequence_length: int
) -> model_lib.ModelConfig:
  """`config` with its embedding table sized for the task's vocabulary, checked."""
  if config.num_embeddings is None:
    config = dataclasses.replace(config, num_embeddings=info.num_embeddings)
  elif config.num_embeddings < info.vocab_size:
    raise ValueError(
      f'NUM_EMBEDDINGS={config.num_embeddings} is smaller than the '
      f'{info.vocab_size} ids of task {info.name!r} (the <pause> row '
      f'included); set --gin.NUM_EMBEDDINGS=None to size it from the task.'
    )
  if sequence_length > config.max_len:
    raise ValueError(
      f"SEQUENCE_LENGTH={sequence_length} exceeds the model's max_len="
      f'{config.max_len}; lower SEQUENCE_LENGTH or raise '
      '--gin.ModelConfig.max_len.'
    )
  return config


def abstract_params(model: nn.Module) -> Any:
  """The model's parameter shapes, boxed with their logical axis names; nothing allocated."""
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 1), jnp.int32))['params']


def sharded_abstract_params(
  model: nn.Module, mesh: jax.sharding.Mesh, rules: sharding.LogicalRules
) -> tuple[Any, Any]:
  """(parameter shapes carrying their shardings, the shardings), as training lays them out."""
  boxed = abstract_params(model)
  shardings = sharding.logical_to_shardings(nn.get_partition_spec(boxed), mesh, rules)
  abstract = jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), nn.unbox(boxed), shardings
  )
  return abstract, shardings
