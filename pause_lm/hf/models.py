"""Hugging Face checkpoints in and out: GPT-2, Llama, Mistral and Qwen2 `config.json` + safetensors.

  config, params = pause_lm.hf.models.from_pretrained('path/to/hf_dir')
  logits = Decoder(config).apply({'params': params}, ids)  # [:, :, :vocab_size] = transformers'

The `<pause>` row is appended at id = the checkpoint's `vocab_size` (as `PauseVocabulary` puts
it, one past the tokenizer) and the table is padded to a multiple of 128 rows
(`vocab.EMBEDDING_ROW_MULTIPLE`). Its input embedding is the mean of the real rows: a pause then
starts as an average token, inside the distribution every layer was trained on, instead of an
outlier (a zero or random vector) whose activations the pretrained blocks never saw; the first
pause-finetuning steps then adapt a plausible input rather than recover from a shock. The output
head's pause row is the mean of the head's rows for the same reason (with tied embeddings it is
the same row): its logit starts near the average logit, so it takes about a 1/vocab share of the
softmax. That share is all it ever gets from the data: the loss never targets `<pause>` and
decoding never samples it (`vocab_limit`). Alignment padding rows are zero.

A checkpoint that `save_pretrained` wrote already holds its pause row; its config says so with
`pause_token_id`, and nothing is appended (so export and re-import give identical parameters).

Tensors are read and written one at a time (safetensors is memory-mapped), so converting never
needs two copies of the model in memory. torch and transformers are not needed.
"""

import json
import math
import os
import shutil
import struct
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from absl import logging
import numpy as np
import safetensors

from pause_lm.data import vocab as vocab_lib
from pause_lm.model.transformer import ModelConfig

CONFIG_FILE = 'config.json'
INDEX_FILE = 'model.safetensors.index.json'
SINGLE_FILE = 'model.safetensors'
PAUSE_ID_KEY = 'pause_token_id'
TOKENIZER_FILES = ('tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json')
_LLAMA_FAMILY = ('llama', 'mistral', 'qwen2')
SUPPORTED = ('gpt2',) + _LLAMA_FAMILY
_GPT2_BUFFERS = ('.attn.bias', '.attn.masked_bias')  # causal-mask buffers in old GPT-2 files


def read_config(hf_dir: str) -> dict[str, Any]:
  path = os.path.join(hf_dir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(
      f'{path} not found: from_pretrained needs a Hugging Face model '
      'folder (config.json + *.safetensors), e.g. from '
      '`huggingface-cli download MODEL --local-dir DIR`.'
    )
  with open(path) as f:
    return json.load(f)


def _rope_settings(hf: dict[str, Any]) -> dict[str, Any]:
  """RoPE fields from transformers 4 (`rope_theta`, `rope_scaling`) or 5 (`rope_parameters`)."""
  params = dict(hf.get('rope_parameters') or hf.get('rope_scaling') or {})
  theta = params.get('rope_theta', hf.get('rope_theta', 10_000.0))
  kind = params.get('rope_type', params.get('type', 'default'))
  if kind == 'default':
    return dict(rope_theta=float(theta), rope_scaling=None)
  if kind == 'linear':
    return dict(
      rope_theta=float(theta), rope_scaling='linear', rope_scaling_factor=float(params['factor'])
    )
  if kind == 'llama3':
    return dict(
      rope_theta=float(theta),
      rope_scaling='llama3',
      rope_scaling_factor=float(params['factor']),
      rope_low_freq_factor=float(params['low_freq_factor']),
      rope_high_freq_factor=float(params['high_freq_factor']),
      rope_original_max_len=int(params['original_max_position_embeddings']),
    )
  raise ValueError(
    f'rope_scaling type {kind!r} is not supported (supported: default, linear, '
    'llama3); pick a checkpoint without it or add it to pause_lm/model/rope.py.'
  )


def _require(hf: dict[str, Any], key: str, wanted, why: str):
  if hf.get(key, wanted) != wanted:
    raise ValueError(f'config.json has {key}={hf[key]!r}; only {wanted!r} is supported: {why}')


def vocab_size(hf: dict[str, Any]) -> int:
  """Token ids of the checkpoint without pause-lm's rows: the `<pause>` id of a fresh import."""
  return int(hf[PAUSE_ID_KEY]) if PAUSE_ID_KEY in hf else int(hf['vocab_size'])


def num_embeddings(hf: dict[str, Any]) -> int:
  if PAUSE_ID_KEY in hf:
    return int(hf['vocab_size'])
  return int(
    math.ceil((hf['vocab_size'] + 1) / vocab_lib.EMBEDDING_ROW_MULTIPLE)
    * vocab_lib.EMBEDDING_ROW_MULTIPLE
  )


def model_config(hf: dict[str, Any], **overrides) -> ModelConfig:
  """The ModelConfig of a Hugging Face config dict; overrides (dtype, remat, ...) win."""
  model_type = hf.get('model_type')
  if model_type not in SUPPORTED:
    raise ValueError(f'model_type {model_type!r} is not supported; supported: {SUPPORTED}.')
  if model_type == 'gpt2':
    if hf.get('activation_function', 'gelu_new') not in ('gelu_new', 'gelu_pytorch_tanh'):
      raise ValueError(
        f'GPT-2 activation_function {hf["activation_function"]!r} is not '
        'supported: the decoder uses the tanh-approximate GELU (gelu_new).'
      )
    _require(hf, 'scale_attn_weights', True, 'attention is always scaled by 1/sqrt(head_dim).')
    _require(hf, 'scale_attn_by_inverse_layer_idx', False, 'no per-layer attention scaling.')
    fields = dict(
      num_layers=hf['n_layer'],
      num_heads=hf['n_head'],
      emb_dim=hf['n_embd'],
      mlp_dim=hf.get('n_inner') or 4 * hf['n_embd'],
      max_len=hf['n_positions'],
      norm_epsilon=hf.get('layer_norm_epsilon', 1e-5),
      tie_embeddings=hf.get('tie_word_embeddings', True),
    )
  else:
    _require(hf, 'hidden_act', 'silu', 'the MLP is SwiGLU (silu gate).')
    heads, emb = hf['num_attention_heads'], hf['hidden_size']
    if hf.get('head_dim') not in (None, emb // heads):
      raise ValueError(
        f'head_dim={hf["head_dim"]} differs from hidden_size / '
        f'num_attention_heads = {emb // heads}; not supported.'
      )
    for key in ('attention_bias', 'mlp_bias'):
      _require(hf, key, False, 'Llama checkpoints with output/MLP biases are not supported.')
    max_len = hf['max_position_embeddings']
    window = hf.get('sliding_window')
    if window and (model_type == 'mistral' or hf.get('use_sliding_window')):
      # Full attention equals sliding-window attention on sequences no longer than the window.
      max_len = min(max_len, window)
    fields = dict(
      num_layers=hf['num_hidden_layers'],
      num_heads=heads,
      num_kv_heads=hf.get('num_key_value_heads') or heads,
      emb_dim=emb,
      mlp_dim=hf['intermediate_size'],
      max_len=max_len,
      norm='rms_norm',
      norm_epsilon=hf.get('rms_norm_eps', 1e-6),
      position_embedding='rope',
      mlp_activation='swiglu',
      qkv_bias=model_type == 'qwen2',
      dense_bias=False,
      tie_embeddings=hf.get('tie_word_embeddings', False),
      **_rope_settings(hf),
    )
  return ModelConfig(num_embeddings=num_embeddings(hf), **{**fields, **overrides})


class _Tensors:
  """The checkpoint's tensors by name, over one file or an index of shards; read one at a time."""

  def __init__(self, hf_dir: str):
    index = os.path.join(hf_dir, INDEX_FILE)
    if os.path.exists(index):
      with open(index) as f:
        self._files = {
          name: os.path.join(hf_dir, shard) for name, shard in json.load(f)['weight_map'].items()
        }
    elif os.path.exists(os.path.join(hf_dir, SINGLE_FILE)):
      path = os.path.join(hf_dir, SINGLE_FILE)
      with safetensors.safe_open(path, framework='flax') as f:
        self._files = {name: path for name in f.keys()}
    else:
      raise FileNotFoundError(
        f'{hf_dir} has neither {SINGLE_FILE} nor {INDEX_FILE}; only '
        'safetensors checkpoints are read (not pytorch_model.bin).'
      )
    self._prefix = ''
    if 'transformer.wte.weight' in self._files:
      self._prefix = 'transformer.'  # GPT2LMHeadModel's own files; the Hub's gpt2 has no prefix
    self.used = set()

  def __contains__(self, name):
    return name in self._files or self._prefix + name in self._files

  def names(self):
    return set(self._files)

  def __call__(self, name: str) -> np.ndarray:
    """float32 numpy copy of one tensor (bfloat16 and float16 files are upcast)."""
    if name not in self._files:
      name = self._prefix + name
    if name not in self._files:
      raise KeyError(f'tensor {name!r} is missing from the checkpoint')
    self.used.add(name)
    with safetensors.safe_open(self._files[name], framework='flax') as f:
      return np.asarray(f.get_tensor(name), dtype=np.float32)


# --- The name map: one table per family, read by import and export alike ------------------------


class _Tensor(NamedTuple):
  """One Hugging Face tensor and the parameters of ours it holds.

  Import reads `hf`, transposes it when `transpose`, splits its last axis into one part per
  `ours` path and reshapes each to that parameter's shape; export runs the same steps backwards.
  So the two directions cannot disagree about a name, an order or a layout.
  """

  hf: str  # Its name; in a layer's table, after the layer's prefix.
  ours: tuple[str, ...]  # Our parameter paths ('attention/query/kernel'), in HF's order.
  shape: str  # Our parameter's axes, one letter each (see `_dims`).
  # Leading axes of ours that make HF's first axis ([in, out] kernels); 0: HF's is a vector.
  rows: int = 0
  transpose: bool = False  # HF stores [out, in] (torch.nn.Linear), we store [in, out].
  when: str | None = None  # The ModelConfig flag this tensor exists under (qkv_bias).
  vocab_rows: bool = False  # HF's rows are token ids: a fresh import appends the pause row.


class _NameMap(NamedTuple):
  layer_prefix: str  # Of each layer's tensors; `{i}` is the layer.
  export_prefix: str  # Prepended to every name but lm_head's on export (GPT2LMHeadModel's).
  before: tuple[_Tensor, ...]  # Outside the layers, written before them.
  layer: tuple[_Tensor, ...]
  after: tuple[_Tensor, ...]


_QKV = ('query', 'key', 'value')
_GPT2 = _NameMap(
  layer_prefix='h.{i}.',
  export_prefix='transformer.',
  before=(
    _Tensor('wte.weight', ('token_embed/embedding',), 'vd', rows=1, vocab_rows=True),
    _Tensor('wpe.weight', ('position_embed/embedding',), 'pd', rows=1),
  ),
  layer=(
    _Tensor('attn.c_attn.weight', tuple(f'attention/{k}/kernel' for k in _QKV), 'dnh', rows=1),
    _Tensor('attn.c_attn.bias', tuple(f'attention/{k}/bias' for k in _QKV), 'nh'),
    _Tensor('attn.c_proj.weight', ('attention/out/kernel',), 'nhd', rows=2),
    _Tensor('attn.c_proj.bias', ('attention/out/bias',), 'd'),
    _Tensor('ln_1.weight', ('pre_attention_norm/scale',), 'd'),
    _Tensor('ln_1.bias', ('pre_attention_norm/bias',), 'd'),
    _Tensor('ln_2.weight', ('pre_mlp_norm/scale',), 'd'),
    _Tensor('ln_2.bias', ('pre_mlp_norm/bias',), 'd'),
    _Tensor('mlp.c_fc.weight', ('mlp/wi/kernel',), 'df', rows=1),
    _Tensor('mlp.c_fc.bias', ('mlp/wi/bias',), 'f'),
    _Tensor('mlp.c_proj.weight', ('mlp/wo/kernel',), 'fd', rows=1),
    _Tensor('mlp.c_proj.bias', ('mlp/wo/bias',), 'd'),
  ),
  after=(
    _Tensor('ln_f.weight', ('final_norm/scale',), 'd'),
    _Tensor('ln_f.bias', ('final_norm/bias',), 'd'),
  ),
)
_LLAMA = _NameMap(
  layer_prefix='model.layers.{i}.',
  export_prefix='',
  before=(
    _Tensor('model.embed_tokens.weight', ('token_embed/embedding',), 'vd', rows=1, vocab_rows=True),
  ),
  layer=(
    _Tensor('self_attn.q_proj.weight', ('attention/query/kernel',), 'dnh', rows=1, transpose=True),
    _Tensor('self_attn.q_proj.bias', ('attention/query/bias',), 'nh', when='qkv_bias'),
    _Tensor('self_attn.k_proj.weight', ('attention/key/kernel',), 'dkh', rows=1, transpose=True),
    _Tensor('self_attn.k_proj.bias', ('attention/key/bias',), 'kh', when='qkv_bias'),
    _Tensor('self_attn.v_proj.weight', ('attention/value/kernel',), 'dkh', rows=1, transpose=True),
    _Tensor('self_attn.v_proj.bias', ('attention/value/bias',), 'kh', when='qkv_bias'),
    _Tensor('self_attn.o_proj.weight', ('attention/out/kernel',), 'nhd', rows=2, transpose=True),
    _Tensor('input_layernorm.weight', ('pre_attention_norm/scale',), 'd'),
    _Tensor('post_attention_layernorm.weight', ('pre_mlp_norm/scale',), 'd'),
    _Tensor('mlp.gate_proj.weight', ('mlp/wi_0/kernel',), 'df', rows=1, transpose=True),
    _Tensor('mlp.up_proj.weight', ('mlp/wi_1/kernel',), 'df', rows=1, transpose=True),
    _Tensor('mlp.down_proj.weight', ('mlp/wo/kernel',), 'fd', rows=1, transpose=True),
  ),
  after=(_Tensor('model.norm.weight', ('final_norm/scale',), 'd'),),
)
# Every family's untied output head, outside the export prefix.
_LM_HEAD = _Tensor(
  'lm_head.weight', ('logits/kernel',), 'dv', rows=1, transpose=True, vocab_rows=True
)


def _name_map(family: str) -> _NameMap:
  return _GPT2 if family == 'gpt2' else _LLAMA


def _dims(config: ModelConfig) -> dict[str, int]:
  """The sizes the letters of `_Tensor.shape` stand for."""
  return {
    'v': config.num_embeddings,
    'p': config.max_len,
    'd': config.emb_dim,
    'n': config.num_heads,
    'k': config.kv_heads,
    'h': config.head_dim,
    'f': config.mlp_dim,
  }


def _tensors(
  config: ModelConfig, family: str, *, export: bool = False
) -> Iterator[tuple[int | None, str, _Tensor]]:
  """(layer or None, HF name, entry) for each tensor `config` has, in the exported file's order."""
  names = _name_map(family)
  prefix = names.export_prefix if export else ''

  def present(tensor):
    return tensor.when is None or getattr(config, tensor.when)

  for tensor in filter(present, names.before):
    yield None, prefix + tensor.hf, tensor
  for i in range(config.num_layers):
    for tensor in filter(present, names.layer):
      yield i, prefix + names.layer_prefix.format(i=i) + tensor.hf, tensor
  for tensor in filter(present, names.after):
    yield None, prefix + tensor.hf, tensor
  if not config.tie_embeddings:
    yield None, _LM_HEAD.hf, _LM_HEAD


def _our_shape(tensor: _Tensor, dims: dict[str, int]) -> tuple[int, ...]:
  return tuple(dims[axis] for axis in tensor.shape)


def _hf_shape(tensor: _Tensor, dims: dict[str, int]) -> tuple[int, ...]:
  ours = _our_shape(tensor, dims)
  parts = len(tensor.ours)
  if not tensor.rows:
    return (math.prod(ours) * parts,)
  shape = (math.prod(ours[: tensor.rows]), math.prod(ours[tensor.rows :]) * parts)
  return shape[::-1] if tensor.transpose else shape


def _to_ours(tensor: _Tensor, value: np.ndarray, dims: dict[str, int]) -> list[np.ndarray]:
  """HF's array -> ours, one per `tensor.ours` path."""
  value = value.T if tensor.transpose else value
  parts = np.split(value, len(tensor.ours), axis=-1) if len(tensor.ours) > 1 else [value]
  return [part.reshape(_our_shape(tensor, dims)) for part in parts]


def _to_hf(tensor: _Tensor, values: list[Any], dims: dict[str, int]) -> np.ndarray:
  """Ours (one per `tensor.ours` path) -> HF's array: `_to_ours` backwards."""
  ours = _our_shape(tensor, dims)
  flat = (math.prod(ours[: tensor.rows]), -1) if tensor.rows else (-1,)
  parts = [np.reshape(np.asarray(v), flat) for v in values]
  value = np.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
  return value.T if tensor.transpose else value


def hf_parameter_paths(config: ModelConfig, family: str) -> dict[str, tuple[tuple[str, ...], ...]]:
  """HF tensor name (as `save_pretrained` writes it) -> the paths of the parameters it holds.

  Paths are into the unscanned parameter tree (`('layers_0', 'attention', 'query', 'kernel')`),
  for code that lines the two libraries' parameters up (benchmarks/vs_pytorch.py).
  """
  return {
    name: tuple(
      (() if layer is None else (f'layers_{layer}',)) + tuple(path.split('/'))
      for path in tensor.ours
    )
    for layer, name, tensor in _tensors(config, family, export=True)
  }


def _with_pause_rows(rows: np.ndarray, num_rows: int) -> np.ndarray:
  """[V, d] -> [num_rows, d]: row V is the mean of the V rows (see the module docstring)."""
  out = np.zeros((num_rows, rows.shape[1]), np.float32)
  out[: len(rows)] = rows
  out[len(rows)] = rows.mean(axis=0)
  return out


def _put(params: dict[str, Any], config: ModelConfig, layer: int | None, path, value) -> None:
  """Stores one parameter, of a layer or not; scanned layers are stacked on a leading axis."""
  if layer is None:
    node = params
  elif config.scan_layers:
    node = params.setdefault('layers', {})
  else:
    node = params.setdefault(f'layers_{layer}', {})
  for key in path[:-1]:
    node = node.setdefault(key, {})
  if layer is not None and config.scan_layers:
    if path[-1] not in node:
      node[path[-1]] = np.empty((config.num_layers, *value.shape), np.float32)
    node[path[-1]][layer] = value
  else:
    node[path[-1]] = value


def from_pretrained(hf_dir: str, **overrides) -> tuple[ModelConfig, dict[str, Any]]:
  """Reads a Hugging Face checkpoint folder into (ModelConfig, params) for `model.Decoder`.

  Args:
    hf_dir: folder with config.json and model.safetensors (or sharded files with
      model.safetensors.index.json) of a GPT2LMHeadModel, LlamaForCausalLM, MistralForCausalLM
      or Qwen2ForCausalLM.
    **overrides: ModelConfig fields to set (dtype, remat_policy, scan_layers, ...). With
      scan_layers=True the layers come stacked, as nn.scan stores them.

  Returns:
    The config and the unboxed float32 'params' collection (numpy arrays).
  """
  hf = read_config(hf_dir)
  config = model_config(hf, **overrides)
  read = _Tensors(hf_dir)
  fresh = PAUSE_ID_KEY not in hf
  dims = _dims(config)
  params: dict[str, Any] = {}
  for layer, name, tensor in _tensors(config, hf['model_type']):
    if tensor is _LM_HEAD and name not in read:
      raise ValueError(f'{hf_dir}: tie_word_embeddings is false but there is no lm_head.weight.')
    value = read(name)
    if tensor.vocab_rows and fresh:
      value = _with_pause_rows(value, config.num_embeddings)
    for path, part in zip(tensor.ours, _to_ours(tensor, value, dims)):
      _put(params, config, layer, path.split('/'), part)
  unused = {
    n
    for n in read.names() - read.used
    if not n.endswith(_GPT2_BUFFERS) and n != 'lm_head.weight' and 'rotary_emb' not in n
  }
  if unused:
    raise ValueError(
      f'{hf_dir} holds tensors this conversion does not use, so it is not the '
      f'architecture its config.json names: {sorted(unused)[:5]}'
    )
  logging.info(
    'Loaded %s (%s) with %d embedding rows; <pause> id %d.',
    hf_dir,
    hf['model_type'],
    config.num_embeddings,
    vocab_size(hf),
  )
  return config, params


# --- Export ------------------------------------------------------------------------------------


def _family(config: ModelConfig, base_type: str | None) -> str:
  if (
    (config.position_embedding, config.norm, config.mlp_activation)
    == ('learned', 'layer_norm', 'gelu')
    and config.qkv_bias
    and config.dense_bias
  ):
    return 'gpt2'
  if (config.position_embedding, config.norm, config.mlp_activation) == (
    'rope',
    'rms_norm',
    'swiglu',
  ) and not config.dense_bias:
    if config.qkv_bias:
      return 'qwen2'
    return 'mistral' if base_type == 'mistral' else 'llama'
  raise ValueError(
    f'No Hugging Face architecture matches this ModelConfig ({config}): export '
    'needs the GPT-2 defaults or the Llama family (rope, rms_norm, swiglu, no '
    'output/MLP biases; q/k/v biases make it Qwen2).'
  )


_ARCHITECTURES = {
  'gpt2': 'GPT2LMHeadModel',
  'llama': 'LlamaForCausalLM',
  'mistral': 'MistralForCausalLM',
  'qwen2': 'Qwen2ForCausalLM',
}
# Keys whose meaning export rewrites; dropped from a base config before the new values go in.
_STALE_KEYS = (
  'rope_parameters',
  'rope_scaling',
  'layer_types',
  'dtype',
  'torch_dtype',
  'transformers_version',
  'head_dim',
  'n_inner',
)


def hf_config(
  config: ModelConfig, pause_id: int | None, base: dict[str, Any] | None = None
) -> dict[str, Any]:
  """config.json for `config`; keeps a base config's other keys (token ids, names)."""
  base = {k: v for k, v in (base or {}).items() if k not in _STALE_KEYS}
  family = _family(config, base.get('model_type'))
  out = {
    **base,
    'model_type': family,
    'architectures': [_ARCHITECTURES[family]],
    'vocab_size': config.num_embeddings,
    'tie_word_embeddings': config.tie_embeddings,
    'torch_dtype': 'float32',
  }
  if pause_id is not None:
    out[PAUSE_ID_KEY] = pause_id
  if family == 'gpt2':
    out.update(
      n_layer=config.num_layers,
      n_head=config.num_heads,
      n_embd=config.emb_dim,
      n_inner=config.mlp_dim,
      n_positions=config.max_len,
      layer_norm_epsilon=config.norm_epsilon,
      activation_function='gelu_new',
    )
    return out
  out.update(
    num_hidden_layers=config.num_layers,
    num_attention_heads=config.num_heads,
    num_key_value_heads=config.kv_heads,
    hidden_size=config.emb_dim,
    head_dim=config.head_dim,
    intermediate_size=config.mlp_dim,
    max_position_embeddings=config.max_len,
    rms_norm_eps=config.norm_epsilon,
    hidden_act='silu',
    rope_theta=config.rope_theta,
  )
  if family == 'llama':
    out.update(attention_bias=False, mlp_bias=False)
  if config.rope_scaling == 'linear':
    out['rope_scaling'] = {
      'rope_type': 'linear',
      'type': 'linear',
      'factor': config.rope_scaling_factor,
    }
  elif config.rope_scaling == 'llama3':
    out['rope_scaling'] = {
      'rope_type': 'llama3',
      'factor': config.rope_scaling_factor,
      'low_freq_factor': config.rope_low_freq_factor,
      'high_freq_factor': config.rope_high_freq_factor,
      'original_max_position_embeddings': config.rope_original_max_len,
    }
  return out


def _hf_tensors(
  config: ModelConfig, params: dict[str, Any], family: str
) -> Iterator[tuple[str, tuple[int, ...], Callable[[], np.ndarray]]]:
  """(name, shape, make) per HF tensor; `make` builds the array only when it is written."""
  dims = _dims(config)

  def make(layer, tensor):
    def get(path):
      keys = path.split('/')
      if layer is None:
        return _get(params, keys)
      if 'layers' in params:
        return _get(params['layers'], keys)[layer]
      return _get(params[f'layers_{layer}'], keys)

    return lambda: _to_hf(tensor, [get(path) for path in tensor.ours], dims)

  for layer, name, tensor in _tensors(config, family, export=True):
    yield name, _hf_shape(tensor, dims), make(layer, tensor)


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def write_safetensors(path: str, tensors) -> None:
  """Writes float32 tensors one at a time: the header first (from the shapes), then each array.

  safetensors.numpy.save_file needs every array in memory at once; this writes the same format
  (8-byte header length, JSON header, contiguous little-endian data) while holding one tensor.
  """
  header, offset = {'__metadata__': {'format': 'pt'}}, 0
  for name, shape, _ in tensors:
    size = 4 * math.prod(shape)
    header[name] = {'dtype': 'F32', 'shape': list(shape), 'data_offsets': [offset, offset + size]}
    offset += size
  encoded = json.dumps(header, separators=(',', ':')).encode()
  encoded += b' ' * (-len(encoded) % 8)
  with open(path, 'wb') as f:
    f.write(struct.pack('<Q', len(encoded)))
    f.write(encoded)
    for name, shape, make in tensors:
      array = np.ascontiguousarray(np.asarray(make(), dtype='<f4'))
      if array.shape != shape:
        raise ValueError(f'{name}: built shape {array.shape}, expected {shape}')
      f.write(array.tobytes())


def save_pretrained(
  config: ModelConfig,
  params: dict[str, Any],
  hf_dir: str,
  *,
  pause_id: int | None = None,
  base_dir: str | None = None,
) -> None:
  """Writes config.json + model.safetensors (+ tokenizer files with <pause>) to hf_dir.

  All `num_embeddings` rows are exported (the pause row and alignment padding included), so
  `vocab_size` is the table size and `pause_token_id` records where the pause is; transformers
  keeps that key, and `from_pretrained` reads it back to append nothing.

  Args:
    config: the model's config.
    params: its unboxed params (scanned or not); numpy or jax arrays.
    hf_dir: output folder (created).
    pause_id: the `<pause>` id (the tokenizer's size); recorded in config.json and added to the
      tokenizer. None when unknown.
    base_dir: a Hugging Face folder the model came from (`convert --from_hf` keeps one as
      MODEL_DIR/hf_base): its other config keys and its tokenizer files are carried over.
  """
  base = read_config(base_dir) if base_dir else None
  out = hf_config(config, pause_id, base)
  os.makedirs(hf_dir, exist_ok=True)
  write_safetensors(
    os.path.join(hf_dir, SINGLE_FILE), list(_hf_tensors(config, params, out['model_type']))
  )
  with open(os.path.join(hf_dir, CONFIG_FILE), 'w') as f:
    json.dump(out, f, indent=2)
  if base_dir and os.path.exists(os.path.join(base_dir, 'tokenizer.json')):
    _export_tokenizer(base_dir, hf_dir, pause_id)


def _export_tokenizer(base_dir: str, hf_dir: str, pause_id: int | None) -> None:
  """Copies the tokenizer files, with `<pause>` as a special added token at `pause_id`.

  The token is special, so HF tools never split it and `skip_special_tokens` hides it; prompts
  for an M-pause evaluation end with M copies of the text `<pause>`. The tokenizers library
  numbers added tokens consecutively, so when the model's vocab_size exceeds the tokenizer's size
  (Qwen2.5 pads its table) the rows in between get placeholder special tokens first.
  """
  import tokenizers  # Only exporting a tokenizer needs it.

  for name in TOKENIZER_FILES:
    if os.path.exists(os.path.join(base_dir, name)):
      shutil.copyfile(os.path.join(base_dir, name), os.path.join(hf_dir, name))
  if pause_id is None:
    return
  path = os.path.join(hf_dir, 'tokenizer.json')
  tokenizer = tokenizers.Tokenizer.from_file(path)
  size = tokenizer.get_vocab_size(with_added_tokens=True)
  if pause_id < size:
    raise ValueError(
      f'The tokenizer already has {size} ids, so <pause> id {pause_id} would be '
      "an ordinary token; pass the right --pause_id (the model's vocab_size "
      'before pause-lm added its rows).'
    )
  placeholders = [f'<pause_lm_unused_{i}>' for i in range(size, pause_id)]
  tokenizer.add_special_tokens(
    [
      tokenizers.AddedToken(t, special=True, normalized=False)
      for t in placeholders + [vocab_lib.PAUSE_TEXT]
    ]
  )
  if tokenizer.token_to_id(vocab_lib.PAUSE_TEXT) != pause_id:
    raise ValueError(
      f'<pause> got id {tokenizer.token_to_id(vocab_lib.PAUSE_TEXT)} in the '
      f'exported tokenizer, not {pause_id}.'
    )
  tokenizer.save(path)
  path = os.path.join(hf_dir, 'tokenizer_config.json')
  settings = {}
  if os.path.exists(path):
    with open(path) as f:
      settings = json.load(f)
  decoder = settings.setdefault('added_tokens_decoder', {})
  for i, text in enumerate(placeholders + [vocab_lib.PAUSE_TEXT], start=size):
    decoder[str(i)] = {
      'content': text,
      'lstrip': False,
      'normalized': False,
      'rstrip': False,
      'single_word': False,
      'special': True,
    }
  with open(path, 'w') as f:
    json.dump(settings, f, indent=2, ensure_ascii=False)
