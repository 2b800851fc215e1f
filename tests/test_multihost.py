"""Multi-host training on one machine: processes over loopback, gloo collectives.

Every run is a subprocess (the device count and jax.distributed are fixed at
start-up). The processes are started by launch/local_multiprocess.sh, the same
script users run.
"""

import os
import shutil
import sys

import pytest

from conftest import EIGHT_DEVICES, REPO, read_scalars, register_eight_device_script, run_python

LAUNCH = REPO / 'launch' / 'local_multiprocess.sh'
# After gin/experiments/tiny_test_model.gin, the tests' small model.
SMALL = (
  'ModelConfig.max_len = 64',
  'SEQUENCE_LENGTH = 32',
  'BATCH_SIZE = 8',
  'WARMUP_STEPS = 2',
  'learning_rate_schedule.total_steps = 6',
  'train.log_every_steps = 1',
  'CheckpointConfig.save_every_steps = 100',
  # Two input shards whatever the process count, so that one process reads
  # exactly the rows two processes read between them.
  'input_shards.num_shards = 2',
)


def train_args(model_dir, *bindings):
  return [
    '-m',
    'pause_lm.train',
    '--gin_file=gin/quickstart.gin',
    '--gin_file=gin/experiments/tiny_test_model.gin',
    f"--gin.MODEL_DIR='{model_dir}'",
    *(f'--gin_bindings={b}' for b in (*SMALL, *bindings)),
  ]


def cpu_env(devices):
  env = dict(
    os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}'
  )
  for name in ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID'):
    env.pop(name, None)
  return env


def run_one_process(devices, model_dir, *bindings):
  run_python(*train_args(model_dir, *bindings), env=cpu_env(devices))


def run_processes(processes, devices, model_dir, log_dir, *bindings):
  env = dict(cpu_env(devices), LOG_DIR=str(log_dir), PYTHON_BIN=sys.executable)
  env.pop('XLA_FLAGS')
  # The launch script starts the processes (python -m ... after the script's own arguments).
  launch = [str(LAUNCH), str(processes), str(devices), sys.executable]
  run_python(*launch, *train_args(model_dir, *bindings), env=env, program='bash')


def read_losses(model_dir):
  return read_scalars(model_dir)['loss']


def test_two_processes_match_one_and_resume_on_a_different_mesh(tmp_path):
  # Reference: one process, 4 devices, data=2 x fsdp=2, 6 steps.
  reference = tmp_path / 'one_process'
  run_one_process(4, reference, 'TRAIN_STEPS = 6', 'create_mesh.fsdp = 2')
  # The same mesh over two processes of 2 devices each, stopped at step 3.
  two = tmp_path / 'two_processes'
  run_processes(2, 2, two, tmp_path / 'logs', 'TRAIN_STEPS = 3', 'create_mesh.fsdp = 2')

  expected = read_losses(reference)
  assert sorted(expected) == [1, 2, 3, 4, 5, 6]
  got = read_losses(two)
  assert sorted(got) == [1, 2, 3]
  assert [got[s] for s in (1, 2, 3)] == pytest.approx([expected[s] for s in (1, 2, 3)], abs=1e-5)
  # Metrics, TensorBoard files and the config come from process 0 only.
  assert len(list(two.glob('events.out.tfevents*'))) == 1
  assert (two / 'config.gin').exists()
  # Every process saved its own input shard.
  data_dir = two / 'checkpoints' / '3' / 'data'
  assert sorted(p.name for p in data_dir.glob('*.index')) == [
    'shard_0-of-2.index',
    'shard_1-of-2.index',
  ]

  # One process on 2 devices, tensor-parallel this time, resumes the
  # two-process checkpoint and continues exactly where the reference did.
  resumed = tmp_path / 'resumed'
  shutil.copytree(two, resumed)
  run_one_process(
    2,
    resumed,
    'TRAIN_STEPS = 6',
    'create_mesh.data = 1',
    'create_mesh.tensor = 2',
    'train.num_microbatches = 2',
  )
  continued = read_losses(resumed)
  assert [continued[s] for s in (4, 5, 6)] == pytest.approx(
    [expected[s] for s in (4, 5, 6)], abs=1e-4
  )


# Saves a tiny train state on one mesh and restores it on others (in conftest's 8-device process).
_RESHARD_SCRIPT = """
import sys
import jax, numpy as np
from pause_lm.checkpointing import checkpointer as checkpointing
from pause_lm.model import transformer as model
from pause_lm.training import optimizer
from pause_lm.runtime import sharding
from pause_lm.training import train_state

config = model.ModelConfig(num_embeddings=64, num_layers=2, num_heads=2,
                           emb_dim=32, mlp_dim=64, max_len=16)
decoder = model.Decoder(config)
opt, _ = optimizer.create_optimizer(learning_rate_fn=lambda step: 1e-3)
rules = sharding.logical_axis_rules()

def state_on(mesh):
  return train_state.abstract_state_and_shardings(decoder, opt, mesh, rules)

def save(mesh, directory):
  init, _, shardings = state_on(mesh)
  with jax.set_mesh(mesh):
    state = jax.jit(init, out_shardings=shardings)(jax.random.key(1))
  manager = checkpointing.ocp.CheckpointManager(directory)
  manager.save(0, args=checkpointing.ocp.args.StandardSave(state))
  manager.wait_until_finished()
  return state

def restore(mesh, directory):
  _, abstract, _ = state_on(mesh)
  manager = checkpointing.ocp.CheckpointManager(directory)
  return manager.restore(0, args=checkpointing.ocp.args.StandardRestore(abstract))

devices = jax.devices()
meshes = {
    8: sharding.create_mesh(data=2, fsdp=2, tensor=2, devices=devices),
    4: sharding.create_mesh(data=1, fsdp=4, tensor=1, devices=devices[:4]),
    2: sharding.create_mesh(data=1, fsdp=1, tensor=2, devices=devices[4:6]),
}
out = {}
for source in (8, 2):
  saved = save(meshes[source], f'{sys.argv[1]}/{source}')
  for target in meshes:
    if target == source:
      continue
    restored = restore(meshes[target], f'{sys.argv[1]}/{source}')
    equal = all(np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(saved), jax.tree.leaves(restored)))
    kernel = restored['params']['layers_0']['attention']['query']['kernel']
    out[f'{source}->{target}'] = [equal, len(kernel.sharding.device_set),
                                  kernel.sharding.shard_shape(kernel.shape)]
"""
register_eight_device_script('reshard', _RESHARD_SCRIPT)


@EIGHT_DEVICES
def test_checkpoint_restores_on_more_or_fewer_devices(eight_device_results):
  out = eight_device_results('reshard')
  # [parameters equal, devices holding the query kernel, its shard shape];
  # the kernel is [embed 32, heads 2, kv 16], split embed->fsdp, heads->tensor.
  assert out == {
    '8->4': [True, 4, [8, 2, 16]],
    '8->2': [True, 2, [32, 1, 16]],
    '2->8': [True, 8, [16, 1, 16]],
    '2->4': [True, 4, [8, 2, 16]],
  }


def test_compile_only_prints_per_device_memory(tmp_path):
  result = run_python(
    *train_args(tmp_path / 'unused', 'create_mesh.fsdp = 4'),
    '--compile_only',
    '--simulated_devices=4',
    env=cpu_env(1),
  )
  for field in ('arguments', 'outputs', 'temporaries', 'total'):
    assert f'  {field}' in result.stdout
  assert "mesh {'data': 1, 'fsdp': 4, 'tensor': 1}" in result.stdout
  # Nothing was trained or written.
  assert not (tmp_path / 'unused').exists()
