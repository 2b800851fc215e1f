"""Mesh construction, batch checks, and 8 simulated devices == 1 device."""

import flax.linen as nn
import jax
import pytest

from pause_lm.runtime import sharding

from conftest import EIGHT_DEVICES, LLAMA_FAMILY, register_eight_device_script

# Runs in conftest's 8-device process (the device count is fixed when jax starts), once per
# family, after `BINDINGS = [...]`: the family's runs on 1 and on 8 devices.
_EIGHT_DEVICE_SCRIPT = """
import sys
import gin, jax
from jax.sharding import PartitionSpec as P
from pause_lm.runtime import gin_utils
from pause_lm.runtime import sharding
from pause_lm.training import trainer

def run(mesh, model_dir):
  gin.clear_config()
  gin_utils.parse_gin(['gin/quickstart.gin'], [
      'ModelConfig.num_layers = 2', 'ModelConfig.num_heads = 2',
      'ModelConfig.emb_dim = 64', 'ModelConfig.mlp_dim = 128',
      'ModelConfig.max_len = 64', 'SEQUENCE_LENGTH = 32', 'BATCH_SIZE = 8',
      'WARMUP_STEPS = 2', 'TRAIN_STEPS = 4', 'train.log_every_steps = 1',
      'train.num_microbatches = %d' % mesh.shape['tensor'],
      f"MODEL_DIR = '{model_dir}'"] + BINDINGS)
  result = trainer.train(mesh=mesh)
  embedding = result.state['params']['token_embed']['embedding']
  return [m['loss'] for _, m in result.history], str(embedding.sharding.spec)

one = run(sharding.create_mesh(devices=jax.devices()[:1]), sys.argv[1] + '/1')
eight = run(sharding.create_mesh(data=2, fsdp=2, tensor=2), sys.argv[1] + '/8')
out = {'one': one, 'eight': eight}
"""


# The Llama family with one key/value head (multi-query): its kv_heads axis stays replicated
# while query heads, MLP and vocabulary split over tensor=2.
_LLAMA_BINDINGS = [
  'ModelConfig.num_kv_heads = 1',
  *(f'ModelConfig.{name} = {value!r}' for name, value in LLAMA_FAMILY.items()),
]
# Gemma 3's parts (issue 25): q/k norms, norms after attention and MLP, GeGLU, scaled and
# tied embeddings, a head size of its own, and a sliding layer whose window (8) is shorter
# than the sequence (32).
_GEMMA3_BINDINGS = [
  *(f'ModelConfig.{name} = {value!r}' for name, value in LLAMA_FAMILY.items()),
  'ModelConfig.num_kv_heads = 1',
  "ModelConfig.norm = 'gemma_rms_norm'",
  'ModelConfig.qk_norm = True',
  'ModelConfig.post_norms = True',
  'ModelConfig.scale_embeddings = True',
  'ModelConfig.attention_head_dim = 16',
  "ModelConfig.mlp_activation = 'geglu'",
  'ModelConfig.tie_embeddings = True',
  'ModelConfig.sliding_window = 8',
  "ModelConfig.layer_types = ('sliding_attention', 'full_attention')",
  'ModelConfig.rope_local_theta = 10000.0',
]
FAMILIES = {'gpt2': [], 'llama': _LLAMA_BINDINGS, 'gemma3': _GEMMA3_BINDINGS}
for _family, _bindings in FAMILIES.items():
  _script = f'BINDINGS = {_bindings!r}\n' + _EIGHT_DEVICE_SCRIPT
  register_eight_device_script(f'sharding_{_family}', _script)


@EIGHT_DEVICES
@pytest.mark.parametrize('family', FAMILIES)
def test_eight_devices_give_the_losses_of_one(eight_device_results, family):
  out = eight_device_results(f'sharding_{family}')
  (one_losses, one_spec), (eight_losses, eight_spec) = out['one'], out['eight']
  assert len(one_losses) == 4
  assert one_losses == pytest.approx(eight_losses, abs=1e-5)
  # The 8-device run really was sharded: vocab over tensor, embed over fsdp.
  assert one_spec == "P('tensor', 'fsdp')"
  assert eight_spec == one_spec


def test_create_mesh_fills_in_the_rest():
  mesh = sharding.create_mesh(data=-1, fsdp=1, tensor=1)
  assert dict(mesh.shape) == {'data': jax.device_count(), 'fsdp': 1, 'tensor': 1}


def test_create_mesh_rejects_impossible_sizes():
  with pytest.raises(ValueError, match='needs .* devices but .* are available'):
    sharding.create_mesh(data=jax.device_count() + 1, fsdp=1, tensor=1)
  with pytest.raises(ValueError, match='at most one -1'):
    sharding.create_mesh(data=-1, fsdp=-1)


def test_batch_size_must_split_over_batch_shards():
  mesh = sharding.create_mesh()
  sharding.check_batch_size(8, mesh, num_microbatches=2)
  with pytest.raises(ValueError, match='num_microbatches'):
    sharding.check_batch_size(9, mesh, num_microbatches=2)


@pytest.mark.parametrize('order', ['as_written', 'reversed'])
def test_default_rules_shard_params_and_keep_activation_embed_whole(order):
  rules = sharding.logical_axis_rules()
  if order == 'reversed':  # Separate activation names: the rules' order does not matter.
    rules = rules[::-1]
  to_mesh = lambda names: tuple(nn.logical_to_mesh_axes(names, rules))
  assert to_mesh(('embed', 'mlp')) == ('fsdp', 'tensor')
  assert to_mesh(('vocab', 'embed')) == ('tensor', 'fsdp')
  assert to_mesh(('activation_batch', 'activation_length', 'activation_embed')) == (
    ('data', 'fsdp'),
    None,
    None,
  )
  assert to_mesh(('activation_batch', 'activation_length', 'activation_mlp')) == (
    ('data', 'fsdp'),
    None,
    'tensor',
  )
