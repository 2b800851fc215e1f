"""Hugging Face checkpoints in and out, against reference files transformers produced.

tests/testdata/hf/<family>/ holds tiny random checkpoints (config.json + safetensors; Llama's in
three shards) and reference.npz with transformers' logits and greedy generations; see
make_model_reference.py there (run by hand; torch and transformers are not test dependencies).
"""

import json
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.flax
import safetensors.numpy
import tokenizers

from pause_lm.checkpointing import checkpointer as checkpointing
from pause_lm.hf import convert
from pause_lm.model import decoding
from pause_lm.hf import models as hf
from pause_lm.model.transformer import Decoder, ModelConfig

DATA = os.path.join(os.path.dirname(__file__), 'testdata', 'hf')
FAMILIES = ('gpt2', 'llama', 'qwen2', 'mistral', 'qwen3', 'gemma3')
MODEL_TYPES = {'gemma3': 'gemma3_text'}  # the folder's name where config.json's model_type differs


def _reference(family):
  return dict(np.load(os.path.join(DATA, family, 'reference.npz')))


@pytest.mark.parametrize('family', FAMILIES)
def test_logits_match_transformers(family):
  config, params = hf.from_pretrained(os.path.join(DATA, family))
  ref = _reference(family)
  vocab = ref['logits'].shape[-1]
  logits = np.asarray(Decoder(config).apply({'params': params}, ref['ids']))
  assert logits.shape == (2, 10, 128)  # vocab + <pause>, padded to 128 rows
  np.testing.assert_allclose(logits[..., :vocab], ref['logits'], atol=5e-5, rtol=1e-5)


def test_families_map_to_their_configs():
  configs = {f: hf.model_config(hf.read_config(os.path.join(DATA, f))) for f in FAMILIES}
  assert configs['gpt2'] == ModelConfig(
    num_embeddings=128,
    num_layers=2,
    num_heads=4,
    emb_dim=32,
    mlp_dim=128,
    max_len=64,
    tie_embeddings=True,
  )
  llama = configs['llama']
  assert (
    llama.num_kv_heads,
    llama.rope_scaling,
    llama.rope_scaling_factor,
    llama.rope_original_max_len,
    llama.rope_theta,
    llama.tie_embeddings,
  ) == (2, 'llama3', 8.0, 16, 500000.0, False)
  assert configs['qwen2'].qkv_bias and configs['qwen2'].tie_embeddings
  assert not configs['mistral'].qkv_bias and configs['mistral'].num_kv_heads == 1


@pytest.mark.parametrize('family', FAMILIES)
def test_kv_cache_greedy_decoding_matches_transformers(family):
  config, params = hf.from_pretrained(os.path.join(DATA, family))
  ref = _reference(family)
  vocab = ref['logits'].shape[-1]
  prompts = [ref[f'prompt_{i}'] for i in range(3)]
  prefixes = np.zeros((3, max(map(len, prompts))), np.int32)
  for row, prompt in enumerate(prompts):
    prefixes[row, : len(prompt)] = prompt
  tokens = decoding.generate(
    params,
    config,
    jnp.asarray(prefixes),
    jnp.asarray([len(p) for p in prompts], jnp.int32),
    max_decode_len=8,
    prefix_lm=False,
    eos_id=config.num_embeddings,
    vocab_limit=vocab,
  ).tokens
  np.testing.assert_array_equal(tokens, np.stack([ref[f'greedy_{i}'] for i in range(3)]))


def test_pause_row_is_the_mean_row_and_padding_rows_are_zero():
  _, params = hf.from_pretrained(os.path.join(DATA, 'llama'))
  with safetensors.safe_open(
    os.path.join(DATA, 'llama', 'model-00001-of-00003.safetensors'), 'np'
  ) as f:
    embedding = f.get_tensor('model.embed_tokens.weight')
  table = params['token_embed']['embedding']
  np.testing.assert_array_equal(table[:120], embedding)
  np.testing.assert_allclose(table[120], embedding.mean(axis=0), atol=1e-7)
  assert not table[121:].any()
  head = params['logits']['kernel']  # untied: the head's pause column is its own mean
  np.testing.assert_allclose(head[:, 120], head[:, :120].mean(axis=1), atol=1e-7)
  assert not head[:, 121:].any()


def test_transformers4_rope_keys_read_the_same(tmp_path):
  source = os.path.join(DATA, 'llama')
  hf_config = hf.read_config(source)
  rope = hf_config.pop('rope_parameters')
  hf_config['rope_theta'] = rope.pop('rope_theta')
  hf_config['rope_scaling'] = {'type': rope.pop('rope_type'), **rope}  # 4.x wrote 'type'
  (tmp_path / 'config.json').write_text(json.dumps(hf_config))
  assert hf.model_config(hf_config) == hf.model_config(hf.read_config(source))
  linear = {**hf_config, 'rope_scaling': {'rope_type': 'linear', 'factor': 2.0}}
  assert hf.model_config(linear).rope_scaling == 'linear'


@pytest.mark.parametrize(
  'change, message',
  [
    ({'model_type': 'gemma'}, 'model_type'),
    ({'rope_parameters': {'rope_type': 'yarn', 'factor': 4.0}}, 'yarn'),
    ({'hidden_act': 'gelu'}, 'hidden_act'),
    ({'head_dim': 16}, 'head_dim'),
    ({'attention_bias': True}, 'attention_bias'),
  ],
)
def test_unsupported_configs_name_the_problem(change, message):
  hf_config = {**hf.read_config(os.path.join(DATA, 'llama')), **change}
  with pytest.raises(ValueError, match=message):
    hf.model_config(hf_config)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
  shutil.copytree(os.path.join(DATA, 'mistral'), tmp_path, dirs_exist_ok=True)
  hf_config = hf.read_config(tmp_path)
  hf_config['model_type'] = 'qwen2'  # Qwen2 has q/k/v biases: the file has none
  (tmp_path / 'config.json').write_text(json.dumps(hf_config))
  with pytest.raises(KeyError, match='q_proj.bias'):
    hf.from_pretrained(tmp_path)
  with pytest.raises(FileNotFoundError, match='safetensors'):
    hf.from_pretrained(os.path.join(DATA))  # no config.json either
  os.remove(tmp_path / 'model.safetensors')
  with pytest.raises(FileNotFoundError, match='safetensors'):
    hf.from_pretrained(tmp_path)


def test_bfloat16_checkpoint_is_upcast(tmp_path):
  source = os.path.join(DATA, 'qwen2')
  shutil.copy(os.path.join(source, 'config.json'), tmp_path)
  with safetensors.safe_open(os.path.join(source, 'model.safetensors'), 'flax') as f:
    tensors = {k: f.get_tensor(k).astype(jnp.bfloat16) for k in f.keys()}
  safetensors.flax.save_file(tensors, os.fspath(tmp_path / 'model.safetensors'))
  config, params = hf.from_pretrained(tmp_path)
  assert all(p.dtype == np.float32 for p in jax.tree.leaves(params))
  ref = _reference('qwen2')
  logits = np.asarray(Decoder(config).apply({'params': params}, ref['ids']))[..., :90]
  np.testing.assert_allclose(logits, ref['logits'], atol=0.3)


def test_scanned_import_computes_the_same_logits():
  source = os.path.join(DATA, 'llama')
  config, params = hf.from_pretrained(source, scan_layers=True)
  assert params['layers']['attention']['key']['kernel'].shape == (2, 32, 2, 8)
  ref = _reference('llama')
  logits = np.asarray(Decoder(config).apply({'params': params}, ref['ids']))[..., :120]
  np.testing.assert_allclose(logits, ref['logits'], atol=5e-5, rtol=1e-5)


@pytest.mark.parametrize('family', FAMILIES)
def test_export_round_trip_gives_identical_params(family, tmp_path):
  source = os.path.join(DATA, family)
  config, params = hf.from_pretrained(source)
  hf.save_pretrained(
    config, params, tmp_path, pause_id=hf.vocab_size(hf.read_config(source)), base_dir=source
  )
  exported = hf.read_config(tmp_path)
  assert (
    exported['vocab_size'] == 128
    and exported['pause_token_id'] == (hf.read_config(source)['vocab_size'])
  )
  assert exported['model_type'] == MODEL_TYPES.get(family, family)
  again_config, again = hf.from_pretrained(tmp_path)
  assert again_config == config
  jax.tree.map(np.testing.assert_array_equal, again, params)
  # The file is standard safetensors: the reference reader sees every tensor.
  names = set(safetensors.numpy.load_file(os.fspath(tmp_path / 'model.safetensors')))
  original = (
    set(json.load(open(os.path.join(source, hf.INDEX_FILE)))['weight_map'])
    if (family == 'llama')
    else set(safetensors.numpy.load_file(os.path.join(source, 'model.safetensors')))
  )
  assert names == original


def test_paper_gpt2_decoder_exports_with_an_untied_head(tmp_path):
  config = ModelConfig(
    num_embeddings=128, num_layers=2, num_heads=4, emb_dim=32, mlp_dim=64, max_len=16
  )
  params = nn.unbox(Decoder(config).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32)))
  hf.save_pretrained(config, params['params'], tmp_path)
  exported = hf.read_config(tmp_path)
  assert exported['architectures'] == ['GPT2LMHeadModel']
  assert exported['tie_word_embeddings'] is False and 'pause_token_id' not in exported
  again_config, again = hf.from_pretrained(tmp_path)
  assert again_config == ModelConfig(**{**config.__dict__, 'num_embeddings': 256})
  # Without pause_token_id the table is treated as a fresh HF vocabulary: a pause row is added.
  np.testing.assert_array_equal(
    again['token_embed']['embedding'][:128], params['params']['token_embed']['embedding']
  )


def test_export_refuses_a_config_no_hf_architecture_has(tmp_path):
  config = ModelConfig(
    num_embeddings=128, num_layers=1, num_heads=2, emb_dim=16, mlp_dim=32, position_embedding='rope'
  )
  with pytest.raises(ValueError, match='No Hugging Face architecture'):
    hf.save_pretrained(config, {}, tmp_path)


def write_tiny_tokenizer(path):
  tokenizer = tokenizers.Tokenizer(
    tokenizers.models.WordLevel(
      {w: i for i, w in enumerate(['<unk>', 'the', 'cat', 'sat', 'on', 'mat'])}, unk_token='<unk>'
    )
  )
  tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  tokenizer.save(os.fspath(path))


def test_convert_both_ways(tmp_path):
  """--from_hf gives an INIT_CHECKPOINT + gin file; --to_hf gives HF files with <pause>."""
  source = tmp_path / 'hf_in'
  shutil.copytree(os.path.join(DATA, 'qwen2'), source)
  write_tiny_tokenizer(source / 'tokenizer.json')
  model_dir = tmp_path / 'converted'
  config = convert.from_hf(os.fspath(source), os.fspath(model_dir))

  import gin

  gin.clear_config()
  try:
    gin.parse_config_file(os.fspath(model_dir / 'model.gin'))
    assert ModelConfig() == config
  finally:
    gin.clear_config()
  # The checkpoint loads the way the trainer's INIT_CHECKPOINT does.
  boxed = jax.eval_shape(Decoder(config).init, jax.random.key(0), jnp.zeros((1, 1), jnp.int32))
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(
    lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), nn.unbox(boxed['params'])
  )
  params = checkpointing.load_params(os.fspath(model_dir), abstract)
  jax.tree.map(np.testing.assert_array_equal, params, hf.from_pretrained(source)[1])

  out = tmp_path / 'hf_out'
  gin.parse_config_file(os.fspath(model_dir / 'model.gin'))
  try:
    convert.to_hf(os.fspath(model_dir), os.fspath(out))
  finally:
    gin.clear_config()
  exported = hf.read_config(out)
  assert exported['pause_token_id'] == 90 and exported['architectures'] == ['Qwen2ForCausalLM']
  again_config, again = hf.from_pretrained(out)
  assert again_config == config
  jax.tree.map(np.testing.assert_array_equal, again, params)
  tokenizer = tokenizers.Tokenizer.from_file(os.fspath(out / 'tokenizer.json'))
  assert tokenizer.encode('the cat <pause> <pause>').ids == [1, 2, 90, 90]
  assert tokenizer.decode([1, 2, 90], skip_special_tokens=True) == 'the cat'
  decoder_settings = json.loads((out / 'tokenizer_config.json').read_text())
  assert decoder_settings['added_tokens_decoder']['90']['content'] == '<pause>'


def test_from_hf_refuses_to_overwrite(tmp_path):
  convert.from_hf(os.path.join(DATA, 'gpt2'), os.fspath(tmp_path))
  with pytest.raises(FileExistsError, match='new --model_dir'):
    convert.from_hf(os.path.join(DATA, 'gpt2'), os.fspath(tmp_path))


def test_tokenizer_export_refuses_a_pause_id_inside_the_vocabulary(tmp_path):
  base = tmp_path / 'base'
  shutil.copytree(os.path.join(DATA, 'qwen2'), base)
  write_tiny_tokenizer(base / 'tokenizer.json')
  config, params = hf.from_pretrained(base)
  with pytest.raises(ValueError, match='ordinary token'):
    hf.save_pretrained(config, params, tmp_path / 'out', pause_id=3, base_dir=base)
