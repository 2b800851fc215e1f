"""Hugging Face files are checked before they are trusted, and exports never leave half a model.

Each test writes a small HF folder (a copy of a tests/testdata/hf checkpoint) with one fault
injected for real: tensors rewritten with safetensors.numpy (transposed, cut, int8, NaN, one
missing or extra), config.json or the index edited or made invalid, a file truncated, a
tokenizer.json that does not parse. Conversion must refuse each with an error that names the
file and the tensor or key; before these checks, every one of them converted with status 0.
"""

import json
import os
import shutil

import jax
import numpy as np
import pytest
import safetensors.numpy

from conftest import run_python
from pause_lm.hf import convert
from pause_lm.hf import models as hf
from pause_lm.hf import tokenizer as hf_tokenizer
from test_hf import DATA, write_tiny_tokenizer


def _copy_model(family, folder):
  """A writable copy of a reference checkpoint (config.json + safetensors)."""
  shutil.copytree(os.path.join(DATA, family), folder)
  return folder


def _rewrite_tensors(folder, change, file='model.safetensors'):
  """Rewrites one safetensors file after `change(tensors)` edited its dict of numpy arrays."""
  path = os.fspath(folder / file)
  tensors = safetensors.numpy.load_file(path)
  change(tensors)
  safetensors.numpy.save_file(tensors, path)
  return path


def _edit_config(folder, change):
  config = json.loads((folder / 'config.json').read_text())
  change(config)
  (folder / 'config.json').write_text(json.dumps(config))


def _refusal(folder, error=hf.HfCheckpointError):
  with pytest.raises(error) as caught:
    hf.from_pretrained(folder)
  return str(caught.value)


def test_a_transposed_tensor_is_refused_naming_it_the_file_and_the_shape(tmp_path):
  folder = _copy_model('qwen2', tmp_path / 'hf')
  name = 'model.layers.0.mlp.gate_proj.weight'

  def transpose(tensors):
    tensors[name] = np.ascontiguousarray(tensors[name].T)

  _rewrite_tensors(folder, transpose)
  message = _refusal(folder)
  assert f'{name} (model.safetensors): shape (32, 48), expected (48, 32) (transposed)' in message
  assert str(folder) in message and 'intermediate_size=48' in message


def test_a_norm_of_the_wrong_length_is_refused(tmp_path):
  folder = _copy_model('qwen2', tmp_path / 'hf')

  def shorten(tensors):
    tensors['model.norm.weight'] = tensors['model.norm.weight'][:-1]

  _rewrite_tensors(folder, shorten)
  assert 'model.norm.weight (model.safetensors): shape (31,), expected (32,)' in _refusal(folder)


@pytest.mark.parametrize(
  'family, name, file, rows',
  [
    # 300 rows under vocab_size 400: the pause row would land at 300, the pause id is 400.
    ('smollm', 'model.embed_tokens.weight', 'model.safetensors', 300),
    # The untied head of the sharded Llama (its third shard), 100 rows under vocab_size 120.
    ('llama', 'lm_head.weight', 'model-00003-of-00003.safetensors', 100),
  ],
)
def test_vocabulary_rows_must_match_vocab_size(tmp_path, family, name, file, rows):
  folder = _copy_model(family, tmp_path / 'hf')
  vocab = hf.read_config(folder)['vocab_size']

  def cut(tensors):
    tensors[name] = tensors[name][:rows]

  _rewrite_tensors(folder, cut, file)
  message = _refusal(folder)
  assert f'{name} ({file}): shape ({rows}, 32), expected ({vocab}, 32)' in message
  assert f'vocab_size={vocab} in config.json' in message


@pytest.mark.parametrize('dtype, name', [(np.int8, 'I8'), (np.bool_, 'BOOL')])
def test_non_float_tensors_are_refused_not_cast(tmp_path, dtype, name):
  folder = _copy_model('qwen2', tmp_path / 'hf')
  tensor = 'model.layers.1.self_attn.q_proj.weight'

  def quantize(tensors):
    tensors[tensor] = (tensors[tensor] * 100).astype(dtype)

  _rewrite_tensors(folder, quantize)
  message = _refusal(folder)
  assert f'{tensor} (model.safetensors): dtype {name}; only float tensors' in message


@pytest.mark.parametrize('bad', [np.nan, np.inf])
def test_non_finite_values_are_refused(tmp_path, bad):
  folder = _copy_model('qwen2', tmp_path / 'hf')
  tensor = 'model.layers.1.mlp.down_proj.weight'

  def poison(tensors):
    tensors[tensor][3, 5] = bad
    tensors[tensor][0, 0] = bad

  path = _rewrite_tensors(folder, poison)
  message = _refusal(folder)
  assert f'{tensor} in {path} holds 2 non-finite value(s) (NaN or inf)' in message


@pytest.mark.parametrize(
  'family, tensor, hint',
  [
    ('qwen2', 'model.layers.1.self_attn.k_proj.weight', ''),
    ('mistral', 'lm_head.weight', 'tie_word_embeddings is false'),
  ],
)
def test_missing_tensors_are_named(tmp_path, family, tensor, hint):
  folder = _copy_model(family, tmp_path / 'hf')
  _rewrite_tensors(folder, lambda tensors: tensors.pop(tensor))
  message = _refusal(folder, hf.MissingTensorError)
  assert f'{tensor}: missing' in message and hint in message


def test_extra_tensors_that_would_be_dropped_are_named(tmp_path):
  folder = _copy_model('qwen2', tmp_path / 'hf')
  extra = 'model.layers.2.mlp.up_proj.weight'  # a third layer under num_hidden_layers: 2

  def add_layer(tensors):
    tensors[extra] = tensors['model.layers.1.mlp.up_proj.weight']

  _rewrite_tensors(folder, add_layer)
  message = _refusal(folder)
  assert f'{extra} (model.safetensors): not a tensor of this qwen2 model' in message


def test_every_problem_is_listed_at_once(tmp_path):
  folder = _copy_model('qwen2', tmp_path / 'hf')

  def break_three(tensors):
    tensors['model.norm.weight'] = tensors['model.norm.weight'][:-1]
    tensors['model.layers.0.input_layernorm.weight'] = np.ones(32, np.int8)
    tensors.pop('model.layers.1.self_attn.v_proj.bias')

  _rewrite_tensors(folder, break_three)
  message = _refusal(folder, hf.MissingTensorError)
  assert '3 problem(s)' in message
  assert all(
    name in message
    for name in ('model.norm.weight', 'input_layernorm.weight', 'layers.1.self_attn.v_proj.bias')
  )


def test_an_invalid_config_json_names_the_file(tmp_path):
  folder = _copy_model('llama', tmp_path / 'hf')
  text = (folder / 'config.json').read_text()
  (folder / 'config.json').write_text(text[: len(text) // 2])  # cut mid-way, as a bad download
  message = _refusal(folder)
  assert f'{folder / "config.json"} is not valid JSON' in message
  (folder / 'config.json').write_text('[1, 2]')
  assert 'not the object of settings' in _refusal(folder)


@pytest.mark.parametrize(
  'family, change, fragments',
  [
    (
      'llama',
      lambda c: [c.pop('hidden_size'), c.pop('num_hidden_layers')],
      ['num_hidden_layers, hidden_size missing (a llama config needs vocab_size'],
    ),
    ('gpt2', lambda c: c.pop('n_embd'), ['n_embd missing (a gpt2 config needs']),
    ('llama', lambda c: c.update(vocab_size=-5), ['vocab_size=-5 is not a positive integer']),
    ('gpt2', lambda c: c.update(n_layer=0), ['n_layer=0 is not a positive integer']),
    ('qwen2', lambda c: c.update(intermediate_size='48'), ["intermediate_size='48' is not"]),
    ('qwen2', lambda c: c.update(num_key_value_heads=0), ['num_key_value_heads=0 is not']),
    ('llama', lambda c: c.update(rms_norm_eps=-1e-5), ['rms_norm_eps=-1e-05 is not a positive']),
    ('llama', lambda c: c.update(tie_word_embeddings='no'), ["tie_word_embeddings='no'"]),
    (
      'qwen2',
      lambda c: c.update(pause_token_id=90),
      ['pause_token_id=90 is not an id below vocab_size=90'],
    ),
    (
      'llama',
      lambda c: c['rope_parameters'].pop('factor'),
      ["RoPE type 'llama3' needs a positive factor, not None"],
    ),
    ('qwen2', lambda c: c.update(num_attention_heads=5), ['not divisible by num_heads 5']),
  ],
)
def test_config_sizes_are_checked_and_the_file_named(tmp_path, family, change, fragments):
  folder = _copy_model(family, tmp_path / 'hf')
  _edit_config(folder, change)
  message = _refusal(folder)
  assert message.startswith(f'{folder / "config.json"}: ')
  assert all(fragment in message for fragment in fragments), message


@pytest.mark.parametrize('file', ['model.safetensors', 'model-00002-of-00003.safetensors'])
def test_a_truncated_safetensors_file_is_named(tmp_path, file):
  folder = _copy_model('qwen2' if file == 'model.safetensors' else 'llama', tmp_path / 'hf')
  path = folder / file
  os.truncate(path, path.stat().st_size // 2)
  message = _refusal(folder)
  assert f'{path} is not a readable safetensors file' in message and 'truncated' in message


def test_an_index_without_weight_map_is_named(tmp_path):
  folder = _copy_model('llama', tmp_path / 'hf')
  index = folder / hf.INDEX_FILE
  index.write_text(json.dumps({'metadata': {'total_size': 1}}))
  assert f'{index} has no "weight_map"' in _refusal(folder)
  index.write_text('{"weight_map": ')
  assert f'{index} is not valid JSON' in _refusal(folder)


def test_an_index_naming_a_missing_shard_is_named(tmp_path):
  folder = _copy_model('llama', tmp_path / 'hf')
  os.remove(folder / 'model-00002-of-00003.safetensors')
  message = _refusal(folder)
  assert f'{folder / hf.INDEX_FILE} names shard(s) that are not in {folder}' in message
  assert 'model-00002-of-00003.safetensors' in message


def test_an_index_placing_a_tensor_in_a_shard_without_it_is_named(tmp_path):
  folder = _copy_model('llama', tmp_path / 'hf')
  index = json.loads((folder / hf.INDEX_FILE).read_text())
  index['weight_map']['model.norm.weight'] = 'model-00001-of-00003.safetensors'
  (folder / hf.INDEX_FILE).write_text(json.dumps(index))
  message = _refusal(folder)
  assert 'places 1 tensor(s) in shards that do not hold them' in message
  assert 'model.norm.weight in model-00001-of-00003.safetensors' in message


def _big_tokenizer(path):
  """A tokenizer with more ids (120) than qwen2's vocab_size (90): <pause> 90 is a token."""
  import tokenizers  # pylint: disable=g-import-not-at-top

  words = {f'w{i}': i for i in range(120)}
  tokenizers.Tokenizer(tokenizers.models.WordLevel(words, unk_token='w0')).save(os.fspath(path))


@pytest.mark.parametrize(
  'name, write, fragment',
  [
    (
      'tokenizer.json',
      lambda p: p.write_text('{"version": "1.0", "model": '),
      'is not a tokenizer',
    ),
    ('tokenizer.json', lambda p: p.write_text('{"version": "1.0"}'), 'is not a tokenizer'),
    (
      'tokenizer.json',
      _big_tokenizer,
      'already has 120 ids, so <pause> id 90 would be an ordinary',
    ),
    ('tokenizer_config.json', lambda p: p.write_text('{"eos_token": '), 'is not valid JSON'),
  ],
)
def test_from_hf_checks_the_tokenizer_before_writing_anything(tmp_path, name, write, fragment):
  source = _copy_model('qwen2', tmp_path / 'hf')
  write_tiny_tokenizer(source / 'tokenizer.json')
  write(source / name)
  model_dir = tmp_path / 'converted'
  with pytest.raises(hf.HfCheckpointError) as caught:
    convert.from_hf(os.fspath(source), os.fspath(model_dir))
  assert f'{source / name} ' in str(caught.value) and fragment in str(caught.value)
  assert not model_dir.exists()  # no checkpoint, no model.gin, no hf_base/ to fail --to_hf later


def test_the_vocabulary_names_an_unreadable_tokenizer_file(tmp_path):
  write_tiny_tokenizer(tmp_path / 'tokenizer.json')
  (tmp_path / 'tokenizer_config.json').write_text('{"eos_token": "</s>",')
  with pytest.raises(ValueError, match='tokenizer_config.json is not valid JSON'):
    hf_tokenizer.HfTokenizerVocabulary(os.fspath(tmp_path))
  (tmp_path / 'tokenizer.json').write_text('{"model": {"type": "WordLevel"')
  hf_tokenizer.load_tokenizer.cache_clear()
  with pytest.raises(ValueError, match='tokenizer.json is not a tokenizer the tokenizers library'):
    hf_tokenizer.HfTokenizerVocabulary(os.fspath(tmp_path))


# --- Export -------------------------------------------------------------------------------------


@pytest.fixture(name='qwen2')
def _qwen2(tmp_path):
  """qwen2's (config, params) and a base folder with a tokenizer, as --from_hf keeps one."""
  base = _copy_model('qwen2', tmp_path / 'base')
  write_tiny_tokenizer(base / 'tokenizer.json')
  config, params = hf.from_pretrained(base)
  return config, params, base


def _stray_folders(parent):
  return [name for name in os.listdir(parent) if '.partial-' in name]


def test_an_export_that_fails_half_way_leaves_no_export(tmp_path, qwen2):
  config, params, base = qwen2
  # A non-finite parameter in the second layer: the first tensors are already written then.
  broken = jax.tree.map(np.array, params)
  broken['layers_1']['mlp']['wo']['kernel'][0, 0] = np.nan
  target = tmp_path / 'export'
  with pytest.raises(hf.HfCheckpointError, match='layers.1.mlp.down_proj.weight has 1 non-finite'):
    hf.save_pretrained(config, broken, target, pause_id=90, base_dir=base)
  assert not target.exists() and not _stray_folders(tmp_path)
  # Over an existing export (overwrite): the old one stays whole.
  hf.save_pretrained(config, params, target, pause_id=90, base_dir=base)
  with pytest.raises(hf.HfCheckpointError, match='non-finite'):
    hf.save_pretrained(config, broken, target, pause_id=90, base_dir=base, overwrite=True)
  assert not _stray_folders(tmp_path)
  jax.tree.map(np.testing.assert_array_equal, hf.from_pretrained(target)[1], params)


@pytest.mark.parametrize(
  'existing', ['config.json', 'model.safetensors', hf.INDEX_FILE, 'tokenizer.json']
)
def test_a_target_holding_another_model_is_refused_without_overwrite(tmp_path, qwen2, existing):
  config, params, base = qwen2
  target = tmp_path / 'export'
  target.mkdir()
  (target / existing).write_text('{}')
  with pytest.raises(hf.ExportTargetError) as caught:
    hf.save_pretrained(config, params, target, pause_id=90, base_dir=base)
  assert f'already holds a model ({existing})' in str(caught.value)
  assert '--overwrite' in str(caught.value)
  assert os.listdir(target) == [existing] and not _stray_folders(tmp_path)


def test_overwrite_removes_the_old_shards_and_index(tmp_path, qwen2):
  config, params, base = qwen2
  target = _copy_model('llama', tmp_path / 'export')  # a sharded model with an index
  (target / 'README.md').write_text('my notes')
  hf.save_pretrained(config, params, target, pause_id=90, base_dir=base, overwrite=True)
  assert sorted(os.listdir(target)) == [
    'README.md',
    'config.json',
    'model.safetensors',
    'reference.npz',
    'tokenizer.json',
    'tokenizer_config.json',  # written by the export: <pause> in added_tokens_decoder
  ]
  again_config, again = hf.from_pretrained(target)
  assert again_config == config
  jax.tree.map(np.testing.assert_array_equal, again, params)


def test_a_target_that_is_a_file_is_refused(tmp_path, qwen2):
  config, params, _ = qwen2
  (tmp_path / 'export').write_text('not a folder')
  with pytest.raises(hf.ExportTargetError, match='is a file, not a folder'):
    hf.save_pretrained(config, params, tmp_path / 'export', overwrite=True)


def test_to_hf_checks_the_target_before_reading_the_checkpoint(tmp_path):
  target = _copy_model('qwen2', tmp_path / 'export')
  # No checkpoint at all: the target is refused first, so nothing slow is done in vain.
  with pytest.raises(hf.ExportTargetError, match='already holds a model'):
    convert.to_hf(os.fspath(tmp_path / 'no_run'), os.fspath(target))


def test_an_export_converted_back_exports_again_with_the_same_pause(tmp_path, qwen2):
  config, params, base = qwen2
  first, second = tmp_path / 'first', tmp_path / 'second'
  hf.save_pretrained(config, params, first, pause_id=90, base_dir=base)
  # Its tokenizer already has <pause> at 90 (91 ids): that is the pause, not a collision.
  hf.save_pretrained(config, params, second, pause_id=90, base_dir=first)
  assert (second / 'tokenizer.json').read_text() == (first / 'tokenizer.json').read_text()


# --- The command ----------------------------------------------------------------------------------


def test_the_command_prints_one_message_without_a_traceback(tmp_path):
  source = _copy_model('gpt2', tmp_path / 'hf')
  _edit_config(source, lambda c: c.update(vocab_size=-5))
  result = run_python(
    '-m',
    'pause_lm.convert',
    f'--from_hf={source}',
    f'--model_dir={tmp_path / "converted"}',
    check=False,
  )
  assert result.returncode == 1, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.endswith(
    f'HfCheckpointError: {source / "config.json"}: vocab_size=-5 is not a positive integer. '
    'Fix config.json, or download the model again (an interrupted download or an edit broke it).'
  )
  assert not (tmp_path / 'converted').exists()


def test_the_command_overwrites_only_when_asked(tmp_path):
  source = _copy_model('qwen2', tmp_path / 'hf')
  write_tiny_tokenizer(source / 'tokenizer.json')
  model_dir = tmp_path / 'converted'
  convert.from_hf(os.fspath(source), os.fspath(model_dir))
  target = _copy_model('llama', tmp_path / 'export')
  with pytest.raises(hf.ExportTargetError):  # without the flag (the printed message: above)
    convert.to_hf(os.fspath(model_dir), os.fspath(target))
  run_python(
    '-m', 'pause_lm.convert', f'--to_hf={target}', f'--model_dir={model_dir}', '--overwrite'
  )
  assert not (target / hf.INDEX_FILE).exists()
  assert hf.read_config(target)['architectures'] == ['Qwen2ForCausalLM']
  jax.tree.map(
    np.testing.assert_array_equal, hf.from_pretrained(target)[1], hf.from_pretrained(source)[1]
  )
