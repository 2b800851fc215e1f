r"""Ahead-of-time compile of the train step, with its per-device memory.

Lowers and compiles exactly the step `train` would run (same model, optimizer,
mesh, rules, batch and microbatches) against abstract arrays, so nothing is
allocated and no data is read, then prints XLA's buffer assignment per device.
An out-of-memory configuration shows here, on a workstation, before a slice
is paid for:

  python -m pause_lm.training.aot --gin_file=gin/stdpt.gin --gin.MODEL_DIR="'unused'" \
      --gin.NUM_EMBEDDINGS=32297 --simulated_devices=8

(`python -m pause_lm.train ... --compile_only` does the same.) Run it on the
target machine to get that backend's numbers; `--simulated_devices=N` instead
compiles for N host-CPU devices, which gives the sharded argument sizes
exactly but a CPU backend's temporaries (see docs/scaling.md). TPU
topologies (`jax.experimental.topologies`) need libtpu installed.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from absl import flags
from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp

from pause_lm.pipeline import datasets as data_lib
from pause_lm.runtime import gin_utils
from pause_lm.model import sizing
from pause_lm.model import transformer as model_lib
from pause_lm.training import optimizer as optimizer_lib
from pause_lm.runtime import sharding
from pause_lm.training import train_state
from pause_lm.training.settings import TrainSettings

GIB = 2**30


def compile_train_step(
  config: model_lib.ModelConfig,
  optimizer: optimizer_lib.Optimizer,
  mesh: jax.sharding.Mesh,
  *,
  batch_size: int,
  sequence_length: int,
  num_microbatches: int = 1,
  z_loss: float = 0.0,
  pause_id: int = 0,
) -> Any:
  """Compiles the sharded train step for `mesh` without allocating anything.

  Returns:
    The `jax.stages.Compiled` step.
  """
  model = model_lib.Decoder(config)
  rules = sharding.logical_axis_rules()
  sharding.check_batch_size(batch_size, mesh, num_microbatches)
  _, abstract_state, state_shardings = train_state.abstract_state_and_shardings(
    model, optimizer.transform, mesh, rules
  )
  batch_spec = sharding.batch_sharding(mesh)
  batch = {
    name: jax.ShapeDtypeStruct((batch_size, sequence_length), jnp.int32, sharding=batch_spec)
    for name in (
      'decoder_input_tokens',
      'decoder_target_tokens',
      'decoder_loss_weights',
      'decoder_positions',
    )
  }
  step = train_state.jit_train_step(
    model,
    optimizer.transform,
    optimizer.schedule,
    rules,
    mesh,
    state_shardings,
    pause_id=pause_id,
    dropout_seed=0,
    z_loss=z_loss,
    num_microbatches=num_microbatches,
  )
  with jax.set_mesh(mesh):
    return step.lower(abstract_state, batch).compile()


def memory_report(compiled: Any) -> dict[str, float]:
  """Per-device bytes from XLA's buffer assignment, in GiB.

  `total` is what must fit: arguments + outputs + temporaries, minus the
  outputs that reuse donated argument buffers (the new train state).
  """
  stats = compiled.memory_analysis()
  if stats is None:
    raise RuntimeError('This backend reports no memory analysis.')
  fields = {
    'arguments': stats.argument_size_in_bytes,
    'outputs': stats.output_size_in_bytes,
    'aliased': stats.alias_size_in_bytes,
    'temporaries': stats.temp_size_in_bytes,
    'code': stats.generated_code_size_in_bytes,
  }
  fields['total'] = (
    fields['arguments'] + fields['outputs'] - fields['aliased'] + fields['temporaries']
  )
  return {k: v / GIB for k, v in fields.items()}


def format_report(report: Mapping[str, float], mesh: jax.sharding.Mesh, label: str) -> str:
  lines = [f'{label}: mesh {dict(mesh.shape)} on {mesh.devices.flat[0].device_kind}; per device:']
  lines += [f'  {name:<12}{gib:9.3f} GiB' for name, gib in report.items()]
  return '\n'.join(lines)


def compile_from_gin(mesh: jax.sharding.Mesh | None = None) -> tuple[Any, jax.sharding.Mesh, str]:
  """Compiles the step that the run file's `train` arguments describe.

  The task is looked up only when NUM_EMBEDDINGS is unset (its vocabulary
  sizes the table); with it set, no data or vocabulary files are needed,
  which is what lets a pretraining config be checked offline.

  Returns:
    (compiled step, mesh, a one-line description of the configuration).
  """
  # The settings gin would call `train` with, references (model, optimizer, mesh) evaluated.
  settings = TrainSettings.from_gin()
  config = settings.model
  sequence_length = settings.sequence_length
  if config.num_embeddings is None:
    info = data_lib.task_info(settings.task)
    config = sizing.model_config_for_task(config, info, sequence_length)
    pause_id = info.pause_id
  else:
    pause_id = config.num_embeddings - 1  # Memory does not depend on it.
  mesh = mesh or settings.mesh
  num_microbatches = settings.num_microbatches
  compiled = compile_train_step(
    config,
    settings.optimizer,
    mesh,
    batch_size=settings.batch_size,
    sequence_length=sequence_length,
    num_microbatches=num_microbatches,
    z_loss=settings.z_loss,
    pause_id=pause_id,
  )
  params = sum(
    x.size for x in jax.tree.leaves(nn.unbox(sizing.abstract_params(model_lib.Decoder(config))))
  )
  label = (
    f'{params / 1e9:.3f}B params, {config.dtype.name} compute, '
    f'{config.param_dtype.name} params, remat={config.remat_policy}, '
    f'batch {settings.batch_size} x {sequence_length} in '
    f'{num_microbatches} microbatch(es)'
  )
  return compiled, mesh, label


def use_simulated_devices(count: int | None) -> None:
  """Makes jax start `count` CPU devices (must precede any device query)."""
  if count:
    jax.config.update('jax_platforms', 'cpu')
    jax.config.update('jax_num_cpu_devices', count)


SIMULATED_DEVICES_HELP = (
  'Compile for this many simulated CPU devices instead of the local '
  'accelerators (only before jax has started its backends).'
)


def run_from_gin(simulated_devices: int | None = None) -> dict[str, float]:
  """Compiles the configured step and prints its memory report.

  Args:
    simulated_devices: Compile for this many CPU devices (`--simulated_devices`); None: the
      local devices.

  Returns:
    The report's per-device GiB.
  """
  use_simulated_devices(simulated_devices)
  compiled, mesh, label = compile_from_gin()
  report = memory_report(compiled)
  print(format_report(report, mesh, label), flush=True)
  return report


def main(argv: Sequence[str]) -> None:
  gin_utils.reject_positional_args(argv)
  logging.set_verbosity(logging.WARNING)
  gin_utils.parse_settings()
  run_from_gin(flags.FLAGS.simulated_devices)


if __name__ == '__main__':
  # Only when run as a program: importing this module (train.py does, with a flag of the same
  # name for --compile_only) defines no flags.
  flags.DEFINE_integer('simulated_devices', None, SIMULATED_DEVICES_HELP)
  gin_utils.run(main)
