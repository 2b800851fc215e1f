"""Qwen3 and Gemma 3 (text) checkpoints: what their config.json maps to, what is refused, and the
paths Llama's tests do not reach (sliding layers scanned and rematerialised, the gin model file).

Logits, greedy KV-cache decoding and the export round trip against transformers are the
parametrized tests of tests/test_hf.py (families 'qwen3' and 'gemma3'); the reference files are
tests/testdata/hf/qwen3 and gemma3, made by make_model_reference.py there.
"""

import dataclasses
import json
import os
import shutil

import gin
import numpy as np
import pytest
import safetensors
import safetensors.numpy

from pause_lm.hf import convert
from pause_lm.hf import models as hf
from pause_lm.model.transformer import Decoder, ModelConfig

DATA = os.path.join(os.path.dirname(__file__), 'testdata', 'hf')
SLIDING, FULL = 'sliding_attention', 'full_attention'


def _config(family):
  return hf.read_config(os.path.join(DATA, family))


def _reference(family):
  return dict(np.load(os.path.join(DATA, family, 'reference.npz')))


def test_qwen3_and_gemma3_map_to_their_configs():
  qwen3 = hf.model_config(_config('qwen3'))
  assert (qwen3.head_dim, qwen3.attention_head_dim, qwen3.qk_norm, qwen3.qkv_bias) == (
    16,
    16,
    True,
    False,
  )
  assert (qwen3.norm, qwen3.mlp_activation, qwen3.tie_embeddings, qwen3.layer_types) == (
    'rms_norm',
    'swiglu',
    False,
    None,
  )
  assert not (qwen3.post_norms or qwen3.scale_embeddings)
  gemma = hf.model_config(_config('gemma3'))
  assert gemma == ModelConfig(
    num_embeddings=128,
    num_layers=3,
    num_heads=4,
    num_kv_heads=1,
    emb_dim=32,
    attention_head_dim=16,
    mlp_dim=64,
    max_len=64,
    norm='gemma_rms_norm',
    norm_epsilon=1e-6,
    position_embedding='rope',
    rope_theta=1_000_000.0,
    rope_scaling='linear',  # on the global layer only
    rope_scaling_factor=2.0,
    rope_local_theta=10_000.0,
    mlp_activation='geglu',
    qkv_bias=False,
    dense_bias=False,
    tie_embeddings=True,
    qk_norm=True,
    post_norms=True,
    scale_embeddings=True,
    query_pre_attn_scalar=24.0,
    layer_types=(SLIDING, SLIDING, FULL),
    sliding_window=4,
  )


def test_gemma3_transformers4_keys_read_the_same():
  """transformers 4.5x wrote rope_theta / rope_local_base_freq / rope_scaling and, for the 1B,
  sliding_window_pattern instead of layer_types."""
  new = _config('gemma3')
  old = {k: v for k, v in new.items() if k not in ('rope_parameters', 'layer_types')}
  old.update(
    rope_theta=1_000_000.0,
    rope_local_base_freq=10_000.0,
    rope_scaling={'rope_type': 'linear', 'factor': 2.0},
    sliding_window_pattern=3,  # layers 1, 2 slide, 3 is global
  )
  assert hf.model_config(old) == hf.model_config(new)
  # Without a window no layer slides; without a pattern HF's default (6) leaves all 3 sliding.
  assert hf.model_config({**old, 'sliding_window': None}).layer_types is None
  del old['sliding_window_pattern']
  assert hf.model_config(old).layer_types == (SLIDING,) * 3


def test_qwen3_sliding_layers_follow_use_sliding_window():
  qwen3 = {**_config('qwen3'), 'sliding_window': 8}
  del qwen3['layer_types']
  assert hf.model_config(qwen3).layer_types is None  # use_sliding_window is false
  slides = hf.model_config({**qwen3, 'use_sliding_window': True, 'max_window_layers': 1})
  assert (slides.layer_types, slides.sliding_window) == ((FULL, SLIDING), 8)


@pytest.mark.parametrize(
  'change, message',
  [
    ({'attn_logit_softcapping': 50.0}, 'attn_logit_softcapping=50.0 is not supported'),
    ({'final_logit_softcapping': 30.0}, 'final_logit_softcapping=30.0 is not supported'),
    ({'use_bidirectional_attention': True}, 'use_bidirectional_attention'),
    ({'hidden_activation': 'gelu'}, 'hidden_activation'),
    ({'attention_bias': True}, 'attention_bias'),
    ({'model_type': 'gemma3'}, 'multimodal'),
    ({'layer_types': [SLIDING, 'chunked_attention', FULL]}, 'layer_types'),
    ({'layer_types': [SLIDING, FULL]}, 'layer_types has 2 entries'),
    ({'query_pre_attn_scalar': 0}, 'query_pre_attn_scalar'),
    (
      {
        'rope_parameters': {
          'full_attention': {'rope_type': 'default', 'rope_theta': 1e6},
          'sliding_attention': {'rope_type': 'linear', 'factor': 2.0, 'rope_theta': 1e4},
        }
      },
      'sliding layers',
    ),
    (
      {
        'rope_parameters': {
          'full_attention': {'rope_type': 'yarn', 'factor': 8.0, 'rope_theta': 1e6},
          'sliding_attention': {'rope_type': 'default', 'rope_theta': 1e4},
        }
      },
      'yarn',
    ),
  ],
)
def test_gemma3_settings_the_decoder_cannot_honour_are_refused(change, message):
  with pytest.raises(hf.HfCheckpointError, match=message):
    hf.model_config({**_config('gemma3'), **change})


def test_qwen3_refusals():
  with pytest.raises(hf.HfCheckpointError, match='yarn'):
    hf.model_config({**_config('qwen3'), 'rope_parameters': {'rope_type': 'yarn', 'factor': 4.0}})
  with pytest.raises(hf.HfCheckpointError, match='attention_bias'):
    hf.model_config({**_config('qwen3'), 'attention_bias': True})


def test_gemma3_window_matters_in_the_reference():
  """The reference sequences are longer than the window: full attention gives other logits."""
  config, params = hf.from_pretrained(os.path.join(DATA, 'gemma3'))
  ids = _reference('gemma3')['ids']
  windowed = np.asarray(Decoder(config).apply({'params': params}, ids))
  wide = dataclasses.replace(config, sliding_window=64)
  full = np.asarray(Decoder(wide).apply({'params': params}, ids))
  np.testing.assert_allclose(windowed[:, :4], full[:, :4], atol=1e-5)  # inside the window
  assert np.abs(windowed[:, 4:] - full[:, 4:]).max() > 1e-2


def test_gemma3_scanned_and_rematerialised_import_computes_the_same_logits():
  source = os.path.join(DATA, 'gemma3')
  config, params = hf.from_pretrained(source, scan_layers=True, remat_policy='full')
  assert params['layers']['attention']['query_norm']['scale'].shape == (3, 16)
  assert params['layers']['post_mlp_norm']['scale'].shape == (3, 32)
  ref = _reference('gemma3')
  logits = np.asarray(Decoder(config).apply({'params': params}, ref['ids']))[..., :110]
  np.testing.assert_allclose(logits, ref['logits'], atol=5e-5, rtol=1e-5)


@pytest.mark.parametrize('family', ['qwen3', 'gemma3'])
def test_converted_gin_file_rebuilds_the_config(family):
  config = hf.model_config(_config(family))
  gin.clear_config()
  try:
    gin.parse_config(convert.model_gin(config, f'{family} test'))
    assert ModelConfig() == config
  finally:
    gin.clear_config()


def test_export_names_the_architecture_and_refuses_mixtures(tmp_path):
  qwen3 = hf.model_config(_config('qwen3'))
  gemma = hf.model_config(_config('gemma3'))
  assert hf.hf_config(qwen3, None)['architectures'] == ['Qwen3ForCausalLM']
  exported = hf.hf_config(gemma, 110, _config('gemma3'))
  assert exported['architectures'] == ['Gemma3ForCausalLM']
  assert 'rope_parameters' not in exported and exported['rope_local_base_freq'] == 10_000.0
  assert hf.model_config(exported) == gemma
  for mixture in (
    dataclasses.replace(qwen3, qkv_bias=True),  # q/k norms and q/k/v biases: no HF model
    dataclasses.replace(qwen3, post_norms=True),
    dataclasses.replace(gemma, post_norms=False),
  ):
    with pytest.raises(ValueError, match='No Hugging Face architecture'):
      hf.hf_config(mixture, None)


# The Hub's config.json of each shape (the keys the conversion reads), as transformers 4.5x
# wrote them: they must convert to the gin model files' configs (at max_len 2048, bfloat16).
_LAYERS_270M = [SLIDING if (i + 1) % 6 else FULL for i in range(18)]
HUB_CONFIGS = {
  'qwen3_0_6b': dict(
    model_type='qwen3',
    architectures=['Qwen3ForCausalLM'],
    attention_bias=False,
    head_dim=128,
    hidden_act='silu',
    hidden_size=1024,
    intermediate_size=3072,
    max_position_embeddings=40960,
    max_window_layers=28,
    num_attention_heads=16,
    num_hidden_layers=28,
    num_key_value_heads=8,
    rms_norm_eps=1e-06,
    rope_scaling=None,
    rope_theta=1000000,
    sliding_window=None,
    tie_word_embeddings=True,
    use_sliding_window=False,
    vocab_size=151936,
  ),
  'gemma3_1b': dict(
    model_type='gemma3_text',
    architectures=['Gemma3ForCausalLM'],
    attention_bias=False,
    attn_logit_softcapping=None,
    final_logit_softcapping=None,
    head_dim=256,
    hidden_activation='gelu_pytorch_tanh',
    hidden_size=1152,
    intermediate_size=6912,
    max_position_embeddings=32768,
    num_attention_heads=4,
    num_hidden_layers=26,
    num_key_value_heads=1,
    query_pre_attn_scalar=256,
    rms_norm_eps=1e-06,
    rope_local_base_freq=10000,
    rope_scaling=None,
    rope_theta=1000000,
    sliding_window=512,
    sliding_window_pattern=6,
    vocab_size=262144,
  ),
  'gemma3_270m': dict(
    model_type='gemma3_text',
    architectures=['Gemma3ForCausalLM'],
    attention_bias=False,
    attn_logit_softcapping=None,
    final_logit_softcapping=None,
    head_dim=256,
    hidden_activation='gelu_pytorch_tanh',
    hidden_size=640,
    intermediate_size=2048,
    layer_types=_LAYERS_270M,
    max_position_embeddings=32768,
    num_attention_heads=4,
    num_hidden_layers=18,
    num_key_value_heads=1,
    query_pre_attn_scalar=256,
    rms_norm_eps=1e-06,
    rope_local_base_freq=10000.0,
    rope_scaling=None,
    rope_theta=1000000.0,
    sliding_window=512,
    use_bidirectional_attention=False,
    vocab_size=262144,
  ),
}


@pytest.mark.parametrize('name', sorted(HUB_CONFIGS))
def test_hub_configs_convert_to_the_gin_model_files(name):
  gin.clear_config()
  converted = hf.model_config(HUB_CONFIGS[name], max_len=2048, dtype='bfloat16')
  try:
    gin.parse_config_files_and_bindings([f'gin/models/{name}.gin'], [])
    assert converted == ModelConfig()
  finally:
    gin.clear_config()


def test_checkpoints_of_the_wrong_family_name_their_tensors(tmp_path):
  """Read as another family, the q/k norms (Qwen2's files as Qwen3) or the post-norms (Gemma 3
  without them) are named as missing, and tensors the family lacks as extra: never dropped."""
  qwen = tmp_path / 'qwen2_as_qwen3'
  shutil.copytree(os.path.join(DATA, 'qwen2'), qwen)
  (qwen / 'config.json').write_text(json.dumps({**_config('qwen2'), 'model_type': 'qwen3'}))
  with pytest.raises(hf.MissingTensorError) as error:
    hf.from_pretrained(qwen)
  assert 'model.layers.0.self_attn.q_norm.weight: missing' in str(error.value)
  assert 'q_proj.bias (model.safetensors): not a tensor of this qwen3 model' in str(error.value)
  gemma = tmp_path / 'gemma3_missing'
  gemma.mkdir()
  shutil.copy(os.path.join(DATA, 'gemma3', 'config.json'), gemma)
  with safetensors.safe_open(os.path.join(DATA, 'gemma3', 'model.safetensors'), 'np') as f:
    tensors = {k: f.get_tensor(k) for k in f.keys() if 'layers.1.post_feedforward' not in k}
  safetensors.numpy.save_file(tensors, os.fspath(gemma / 'model.safetensors'))
  with pytest.raises(hf.MissingTensorError, match=r'layers\.1\.post_feedforward_layernorm'):
    hf.from_pretrained(gemma)
