"""Hugging Face checkpoints in and out: GPT-2, Llama, Mistral, Qwen2, Qwen3 and Gemma 3 (text)
`config.json` + safetensors.

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

Nothing read is trusted unchecked, because a wrong file otherwise converts without a word and
trains as garbage (a transposed matrix, an embedding table with fewer rows than `vocab_size`
puts the pause row where no id reads it, an int8 tensor is cast to float). Before any tensor is
read, `config.json` is checked (valid JSON, every size a positive integer) and every tensor's
dtype and shape against it, from the safetensors headers; missing and unexpected tensors are
named. Each tensor's values are checked finite as it is read. Every error is an
`HfCheckpointError` naming the file, the tensor or key, and the fix. An export is written into
a temporary folder beside the target and moved into place only when complete, and never over
another model unless asked to (`overwrite`).

A config field the decoder cannot honour (a RoPE type, logit softcapping, bidirectional
attention, an activation of another kind) is refused with the reason, never dropped: the model
would load and compute something else than the checkpoint was trained as.

Tensors are read and written one at a time (safetensors is memory-mapped), so converting never
needs two copies of the model in memory. torch and transformers are not needed.
"""

import fnmatch
import json
import math
import os
import shutil
import struct
import tempfile
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
_LLAMA_FAMILY = ('llama', 'mistral', 'qwen2', 'qwen3')
GEMMA3 = 'gemma3_text'  # Gemma3ForCausalLM; 'gemma3' is the multimodal model
SUPPORTED = ('gpt2',) + _LLAMA_FAMILY + (GEMMA3,)
_LAYER_TYPES = ('full_attention', 'sliding_attention')
_GPT2_BUFFERS = ('.attn.bias', '.attn.masked_bias')  # causal-mask buffers in old GPT-2 files
# The safetensors dtypes read (and upcast to float32); integer, bool and 8-bit float tensors are
# quantized or not weights at all, and casting them would silently give a different model.
FLOAT_DTYPES = ('F32', 'BF16', 'F16')
# The sizes each family's config.json must give (positive integers), and those it may give.
_REQUIRED_SIZES = {
  'gpt2': ('vocab_size', 'n_layer', 'n_head', 'n_embd', 'n_positions'),
  'llama': (
    'vocab_size',
    'num_hidden_layers',
    'num_attention_heads',
    'hidden_size',
    'intermediate_size',
    'max_position_embeddings',
  ),
}
_OPTIONAL_SIZES = ('n_inner', 'num_key_value_heads', 'head_dim', 'sliding_window')
_EPSILONS = ('layer_norm_epsilon', 'rms_norm_eps')
_OPTIONAL_NUMBERS = ('query_pre_attn_scalar', 'rope_theta', 'rope_local_base_freq')
# What makes a folder hold a Hugging Face model: an export refuses to mix its files with these,
# and `overwrite` removes them first (stale shards or an old index would otherwise be read
# under the new config.json, a stale tokenizer under the new pause id).
MODEL_FILE_PATTERNS = (
  CONFIG_FILE,
  'generation_config.json',
  '*.safetensors',
  '*.safetensors.index.json',
  'pytorch_model*.bin',
  'pytorch_model.bin.index.json',
  'vocab.json',
  'merges.txt',
  'tokenizer.model',
  'added_tokens.json',
) + TOKENIZER_FILES
_REDOWNLOAD = 'download the model again (an interrupted download or an edit broke it)'
_MAX_LISTED = 20


class HfCheckpointError(ValueError):
  """A Hugging Face file or folder that cannot be converted as it is, or an export that cannot
  be written where asked: the message names the file (and the tensor or key) and the fix, so
  the convert command prints it alone, without a traceback."""


class MissingTensorError(HfCheckpointError, KeyError):
  """Tensors the config needs are not in the checkpoint; a KeyError too, as the failed lookup."""

  def __str__(self):
    return ValueError.__str__(self)  # KeyError's own str() would quote the whole message


class ExportTargetError(HfCheckpointError, FileExistsError):
  """The export's target already holds a model (or is a file): replacing it must be asked for."""


def _read_json(path: str, fix: str = _REDOWNLOAD) -> Any:
  """The parsed JSON file; a file that is not JSON is an HfCheckpointError naming it."""
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise HfCheckpointError(f'{path} is not valid JSON ({e}): {fix}.') from None


def read_config(hf_dir: str) -> dict[str, Any]:
  """config.json as a dict (parsed only; `read_model_config` also checks what it says)."""
  path = os.path.join(hf_dir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(
      f'{path} not found: from_pretrained needs a Hugging Face model '
      'folder (config.json + *.safetensors), e.g. from '
      '`huggingface-cli download MODEL --local-dir DIR`.'
    )
  hf = _read_json(path)
  if not isinstance(hf, dict):
    raise HfCheckpointError(
      f'{path} holds a JSON {type(hf).__name__}, not the object of settings a model config is: '
      f'{_REDOWNLOAD}.'
    )
  return hf


def _is_size(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_positive_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _check_config(hf: dict[str, Any]) -> None:
  """Every size the model is built from is present and a positive integer, before any is used:
  a missing key is otherwise a bare KeyError, and `vocab_size: -5` a broken table."""
  family = 'gpt2' if hf['model_type'] == 'gpt2' else 'llama'
  required = _REQUIRED_SIZES[family]
  problems = []
  missing = [key for key in required if key not in hf]
  if missing:
    problems.append(
      f'{", ".join(missing)} missing (a {hf["model_type"]} config needs {", ".join(required)})'
    )
  for key in required + _OPTIONAL_SIZES:
    optional_none = key in _OPTIONAL_SIZES and hf.get(key) is None
    if key in hf and not optional_none and not _is_size(hf[key]):
      problems.append(f'{key}={hf[key]!r} is not a positive integer')
  for key in _EPSILONS:
    if key in hf and not _is_positive_number(hf[key]):
      problems.append(f'{key}={hf[key]!r} is not a positive number')
  for key in _OPTIONAL_NUMBERS:
    if hf.get(key) is not None and not _is_positive_number(hf[key]):
      problems.append(f'{key}={hf[key]!r} is not a positive number')
  if hf.get('layer_types') is not None:
    types = hf['layer_types']
    if not isinstance(types, list) or any(t not in _LAYER_TYPES for t in types):
      problems.append(f'layer_types={types!r} is not a list of {" or ".join(_LAYER_TYPES)}')
    elif _is_size(hf.get('num_hidden_layers')) and len(types) != hf['num_hidden_layers']:
      problems.append(
        f'layer_types has {len(types)} entries for num_hidden_layers={hf["num_hidden_layers"]}'
      )
  if 'tie_word_embeddings' in hf and not isinstance(hf['tie_word_embeddings'], bool):
    problems.append(f'tie_word_embeddings={hf["tie_word_embeddings"]!r} is not true or false')
  pause = hf.get(PAUSE_ID_KEY)
  if PAUSE_ID_KEY in hf and _is_size(hf.get('vocab_size')):
    if not (
      isinstance(pause, int) and not isinstance(pause, bool) and 0 <= pause < hf['vocab_size']
    ):
      problems.append(f'{PAUSE_ID_KEY}={pause!r} is not an id below vocab_size={hf["vocab_size"]}')
  if problems:
    raise HfCheckpointError('; '.join(problems) + f'. Fix config.json, or {_REDOWNLOAD}.')


def _rope_settings(
  hf: dict[str, Any], params: dict[str, Any] | None = None, default_theta: float = 10_000.0
) -> dict[str, Any]:
  """RoPE fields from transformers 4 (`rope_theta`, `rope_scaling`) or 5 (`rope_parameters`).

  `params` is the RoPE object to read when the caller picked it (Gemma 3's per-layer-type ones).
  """
  if params is None:
    params = hf.get('rope_parameters') or hf.get('rope_scaling') or {}
  if not isinstance(params, dict):
    raise HfCheckpointError(f'rope_scaling={params!r} is not an object of RoPE settings.')
  kind = params.get('rope_type', params.get('type', 'default'))

  def number(key, source=params, default=None):
    value = source.get(key, default)
    if not _is_positive_number(value):
      raise HfCheckpointError(f'RoPE type {kind!r} needs a positive {key}, not {value!r}.')
    return value

  theta = float(number('rope_theta', params if 'rope_theta' in params else hf, default_theta))
  if kind == 'default':
    return dict(rope_theta=theta, rope_scaling=None)
  if kind == 'linear':
    return dict(
      rope_theta=theta, rope_scaling='linear', rope_scaling_factor=float(number('factor'))
    )
  if kind == 'llama3':
    return dict(
      rope_theta=theta,
      rope_scaling='llama3',
      rope_scaling_factor=float(number('factor')),
      rope_low_freq_factor=float(number('low_freq_factor')),
      rope_high_freq_factor=float(number('high_freq_factor')),
      rope_original_max_len=int(number('original_max_position_embeddings')),
    )
  raise HfCheckpointError(
    f'rope_scaling type {kind!r} is not supported (supported: default, linear, '
    'llama3); pick a checkpoint without it or add it to pause_lm/model/rope.py.'
  )


def _require(hf: dict[str, Any], key: str, wanted, why: str):
  if hf.get(key, wanted) != wanted:
    raise HfCheckpointError(f'{key}={hf[key]!r} is not supported (only {wanted!r}): {why}')


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


def _layer_types(hf: dict[str, Any], window: int | None, default_pattern: int | None):
  """(layer_types, sliding_window) for ModelConfig: HF's `layer_types`, or Gemma 3's older
  `sliding_window_pattern` (every pattern-th layer global), or Qwen3's `max_window_layers`."""
  layers = hf['num_hidden_layers']
  if window is None:
    return None, None
  types = hf.get('layer_types')
  if types is None and default_pattern is not None:
    pattern = hf.get('sliding_window_pattern', hf.get('_sliding_window_pattern', default_pattern))
    if not _is_size(pattern):
      raise HfCheckpointError(f'sliding_window_pattern={pattern!r} is not a positive integer.')
    types = ['sliding_attention' if (i + 1) % pattern else 'full_attention' for i in range(layers)]
  elif types is None:  # Qwen3: the layers from max_window_layers on slide
    first = hf.get('max_window_layers', 28)
    if not isinstance(first, int) or isinstance(first, bool) or first < 0:
      raise HfCheckpointError(f'max_window_layers={first!r} is not a non-negative integer.')
    types = ['sliding_attention' if i >= first else 'full_attention' for i in range(layers)]
  if 'sliding_attention' not in types:
    return None, None
  return tuple(types), window


def _refuse_set(hf: dict[str, Any], keys: tuple[str, ...], why: str) -> None:
  for key in keys:
    if hf.get(key) not in (None, False):
      raise HfCheckpointError(f'{key}={hf[key]!r} is not supported ({why}).')


def _gemma3_fields(hf: dict[str, Any]) -> dict[str, Any]:
  """Gemma3ForCausalLM's config.json as ModelConfig fields (HF's defaults where a key is absent)."""
  activation = hf.get('hidden_activation', hf.get('hidden_act', 'gelu_pytorch_tanh'))
  if activation != 'gelu_pytorch_tanh':
    raise HfCheckpointError(
      f'hidden_activation={activation!r} is not supported (only gelu_pytorch_tanh): the MLP is '
      'GeGLU with the tanh-approximate GELU.'
    )
  _require(
    hf, 'attention_bias', False, 'Gemma 3 checkpoints with q/k/v/o biases are not supported.'
  )
  _refuse_set(
    hf,
    ('attn_logit_softcapping', 'final_logit_softcapping'),
    'the decoder has no logit softcapping; Gemma 3 itself sets them null',
  )
  _refuse_set(
    hf, ('use_bidirectional_attention',), 'the decoder is causal (prefix-LM aside), not an encoder'
  )
  heads, emb = hf['num_attention_heads'], hf['hidden_size']
  head_dim = hf.get('head_dim') or 256
  rope = hf.get('rope_parameters')
  if isinstance(rope, dict) and ('full_attention' in rope or 'sliding_attention' in rope):
    full = rope.get('full_attention') or {}
    local = rope.get('sliding_attention') or {}
  else:  # transformers 4: rope_theta, rope_local_base_freq and rope_scaling (global layers)
    full = {**(hf.get('rope_scaling') or {}), 'rope_theta': hf.get('rope_theta', 1_000_000.0)}
    local = {'rope_theta': hf.get('rope_local_base_freq', 10_000.0)}
  if not isinstance(full, dict) or not isinstance(local, dict):
    raise HfCheckpointError(f'rope_parameters={rope!r} is not an object of RoPE settings.')
  local_settings = _rope_settings(hf, local, 10_000.0)
  if local_settings['rope_scaling'] is not None:
    raise HfCheckpointError(
      f'RoPE scaling on the sliding layers ({local!r}) is not supported: their RoPE is unscaled.'
    )
  window = hf.get('sliding_window', 4096)
  layer_types, window = _layer_types(hf, window, default_pattern=6)
  scalar = hf.get('query_pre_attn_scalar', 256)
  return dict(
    num_layers=hf['num_hidden_layers'],
    num_heads=heads,
    num_kv_heads=hf.get('num_key_value_heads') or heads,
    emb_dim=emb,
    attention_head_dim=None if head_dim * heads == emb else head_dim,
    mlp_dim=hf['intermediate_size'],
    max_len=hf['max_position_embeddings'],
    norm='gemma_rms_norm',
    norm_epsilon=hf.get('rms_norm_eps', 1e-6),
    position_embedding='rope',
    mlp_activation='geglu',
    qkv_bias=False,
    dense_bias=False,
    tie_embeddings=hf.get('tie_word_embeddings', True),
    qk_norm=True,
    post_norms=True,
    scale_embeddings=True,
    query_pre_attn_scalar=float(scalar),
    layer_types=layer_types,
    sliding_window=window,
    rope_local_theta=local_settings['rope_theta'] if layer_types else None,
    **_rope_settings(hf, full, 1_000_000.0),
  )


def model_config(hf: dict[str, Any], **overrides) -> ModelConfig:
  """The ModelConfig of a Hugging Face config dict; overrides (dtype, remat, ...) win."""
  model_type = hf.get('model_type')
  if model_type not in SUPPORTED:
    hint = ''
    if model_type == 'gemma3':
      hint = (
        ' (Gemma3ForConditionalGeneration, the multimodal model; its text model is read as '
        f'{GEMMA3!r}: Gemma3ForCausalLM checkpoints such as gemma-3-270m and gemma-3-1b)'
      )
    raise HfCheckpointError(
      f'model_type {model_type!r} is not supported{hint}; supported: {SUPPORTED}.'
    )
  _check_config(hf)
  if model_type == GEMMA3:
    fields = _gemma3_fields(hf)
  elif model_type == 'gpt2':
    if hf.get('activation_function', 'gelu_new') not in ('gelu_new', 'gelu_pytorch_tanh'):
      raise HfCheckpointError(
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
    qwen3 = model_type == 'qwen3'
    head_dim = hf.get('head_dim') or (128 if qwen3 else emb // heads)  # HF's defaults
    if head_dim != emb // heads and not qwen3:
      raise HfCheckpointError(
        f'head_dim={hf["head_dim"]} differs from hidden_size / '
        f'num_attention_heads = {emb // heads}; not supported.'
      )
    for key in ('attention_bias', 'mlp_bias'):
      _require(hf, key, False, 'Llama checkpoints with output/MLP biases are not supported.')
    max_len = hf['max_position_embeddings']
    window = hf.get('sliding_window')
    extra = {}
    if qwen3:  # Sliding layers as HF builds them: only with use_sliding_window.
      layer_types, window = _layer_types(
        hf, window if hf.get('use_sliding_window') else None, default_pattern=None
      )
      extra = dict(
        attention_head_dim=None if head_dim * heads == emb else head_dim,
        qk_norm=True,
        layer_types=layer_types,
        sliding_window=window,
      )
    elif window and (model_type == 'mistral' or hf.get('use_sliding_window')):
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
      **extra,
    )
  try:
    return ModelConfig(num_embeddings=num_embeddings(hf), **{**fields, **overrides})
  except ValueError as e:  # ModelConfig's own checks (heads that do not divide the width...)
    raise HfCheckpointError(f'{e}: pause-lm builds no model with these settings.') from None


def read_model_config(hf_dir: str, **overrides) -> tuple[dict[str, Any], ModelConfig]:
  """(config.json as a dict, its ModelConfig), every problem named with the file's path."""
  hf = read_config(hf_dir)
  try:
    return hf, model_config(hf, **overrides)
  except HfCheckpointError as e:
    raise HfCheckpointError(f'{os.path.join(hf_dir, CONFIG_FILE)}: {e}') from None


class _Spec(NamedTuple):
  """What a safetensors header says of one tensor: enough to check it before reading it."""

  shape: tuple[int, ...]
  dtype: str  # safetensors' name: F32, BF16, I8, BOOL, ...
  file: str


def _read_header(path: str) -> dict[str, _Spec]:
  """{name: spec} of one safetensors file; a truncated or damaged file is named."""
  try:
    with safetensors.safe_open(path, framework='flax') as f:
      specs = {}
      for name in f.keys():
        part = f.get_slice(name)
        specs[name] = _Spec(tuple(part.get_shape()), part.get_dtype(), path)
      return specs
  except safetensors.SafetensorError as e:
    raise HfCheckpointError(
      f'{path} is not a readable safetensors file ({e}): it is truncated or damaged; {_REDOWNLOAD}.'
    ) from None


def _index_files(hf_dir: str, index: str) -> dict[str, str]:
  """{tensor name: shard path} of a sharded checkpoint, every shard it names present."""
  weight_map = _read_json(index)
  weight_map = weight_map.get('weight_map') if isinstance(weight_map, dict) else None
  if (
    not isinstance(weight_map, dict)
    or not weight_map
    or not all(isinstance(shard, str) for shard in weight_map.values())
  ):
    raise HfCheckpointError(
      f'{index} has no "weight_map" (tensor name -> shard file name), so the shards cannot be '
      f'found: {_REDOWNLOAD}.'
    )
  absent = sorted({s for s in weight_map.values() if not os.path.isfile(os.path.join(hf_dir, s))})
  if absent:
    raise HfCheckpointError(
      f'{index} names shard(s) that are not in {hf_dir}: {", ".join(absent)}; download them '
      '(an interrupted download?) or the whole model again.'
    )
  return {name: os.path.join(hf_dir, shard) for name, shard in weight_map.items()}


class _Tensors:
  """The checkpoint's tensors by name, over one file or an index of shards; read one at a time.

  Every file's header is read at once (a truncated file or a shard that lacks a tensor its
  index places there fails here), so shapes and dtypes are known before any value is read.
  """

  def __init__(self, hf_dir: str):
    index = os.path.join(hf_dir, INDEX_FILE)
    if os.path.exists(index):
      files = _index_files(hf_dir, index)
      headers = {path: _read_header(path) for path in sorted(set(files.values()))}
      absent = [f'{n} in {os.path.basename(p)}' for n, p in files.items() if n not in headers[p]]
      if absent:
        raise HfCheckpointError(
          f'{index} places {len(absent)} tensor(s) in shards that do not hold them: '
          f'{", ".join(absent[:5])}; the shards and the index are of different downloads: '
          'download the model again.'
        )
      self._specs = {name: headers[path][name] for name, path in files.items()}
    elif os.path.exists(os.path.join(hf_dir, SINGLE_FILE)):
      self._specs = _read_header(os.path.join(hf_dir, SINGLE_FILE))
    else:
      raise FileNotFoundError(
        f'{hf_dir} has neither {SINGLE_FILE} nor {INDEX_FILE}; only '
        'safetensors checkpoints are read (not pytorch_model.bin).'
      )
    self._prefix = ''
    if 'transformer.wte.weight' in self._specs:
      self._prefix = 'transformer.'  # GPT2LMHeadModel's own files; the Hub's gpt2 has no prefix

  def stored_name(self, name: str) -> str | None:
    """The name the files give tensor `name` (GPT-2's may carry a prefix), None if absent."""
    for stored in (name, self._prefix + name):
      if stored in self._specs:
        return stored
    return None

  def spec(self, stored: str) -> _Spec:
    return self._specs[stored]

  def names(self):
    return set(self._specs)

  def __call__(self, name: str) -> np.ndarray:
    """float32 numpy copy of one tensor (bfloat16 and float16 files are upcast), all finite."""
    stored = self.stored_name(name)
    if stored is None:
      raise MissingTensorError(f'tensor {name!r} is missing from the checkpoint')
    path = self._specs[stored].file
    with safetensors.safe_open(path, framework='flax') as f:
      value = np.asarray(f.get_tensor(stored), dtype=np.float32)
    bad = value.size - np.count_nonzero(np.isfinite(value))
    if bad:
      raise HfCheckpointError(
        f'{stored} in {path} holds {bad} non-finite value(s) (NaN or inf) of {value.size}: the '
        f'file is damaged or was saved from a diverged run; {_REDOWNLOAD}, or use another '
        'checkpoint.'
      )
    return value


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
    _Tensor('self_attn.q_norm.weight', ('attention/query_norm/scale',), 'h', when='qk_norm'),
    _Tensor('self_attn.k_norm.weight', ('attention/key_norm/scale',), 'h', when='qk_norm'),
    _Tensor('input_layernorm.weight', ('pre_attention_norm/scale',), 'd'),
    _Tensor('post_attention_layernorm.weight', ('pre_mlp_norm/scale',), 'd'),
    _Tensor('mlp.gate_proj.weight', ('mlp/wi_0/kernel',), 'df', rows=1, transpose=True),
    _Tensor('mlp.up_proj.weight', ('mlp/wi_1/kernel',), 'df', rows=1, transpose=True),
    _Tensor('mlp.down_proj.weight', ('mlp/wo/kernel',), 'fd', rows=1, transpose=True),
  ),
  after=(_Tensor('model.norm.weight', ('final_norm/scale',), 'd'),),
)
# Gemma 3's layer: Llama's projections, q/k norms, and four norms, of which the one HF calls
# post_attention_layernorm is after attention (Llama's of that name is before the MLP).
_GEMMA3_MAP = _LLAMA._replace(
  layer=(
    *(t for t in _LLAMA.layer if 'layernorm' not in t.hf and t.when != 'qkv_bias'),
    _Tensor('input_layernorm.weight', ('pre_attention_norm/scale',), 'd'),
    _Tensor('post_attention_layernorm.weight', ('post_attention_norm/scale',), 'd'),
    _Tensor('pre_feedforward_layernorm.weight', ('pre_mlp_norm/scale',), 'd'),
    _Tensor('post_feedforward_layernorm.weight', ('post_mlp_norm/scale',), 'd'),
  )
)
# Every family's untied output head, outside the export prefix.
_LM_HEAD = _Tensor(
  'lm_head.weight', ('logits/kernel',), 'dv', rows=1, transpose=True, vocab_rows=True
)


def _name_map(family: str) -> _NameMap:
  return {'gpt2': _GPT2, GEMMA3: _GEMMA3_MAP}.get(family, _LLAMA)


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


def _ignored(stored: str, config: ModelConfig) -> bool:
  """Tensors a file may hold that are not weights (buffers) or that HF itself ignores: a tied
  model's copy of lm_head.weight (transformers ties it to the embedding on load)."""
  return (
    stored.endswith(_GPT2_BUFFERS)
    or 'rotary_emb' in stored
    or (stored == _LM_HEAD.hf and config.tie_embeddings)
  )


def _check_tensors(read: _Tensors, config: ModelConfig, hf: dict[str, Any], hf_dir: str) -> None:
  """Every tensor `config` needs is there, a float, of the shape config.json implies, and no
  other tensor is (it would be dropped): all from the headers, before a value is read.

  The file's vocabulary rows are config.json's `vocab_size` (our table adds the pause and the
  padding rows to a fresh import's), so a table of another length is refused rather than
  padded: its pause row would land where the pause id does not point.
  """
  file_dims = {**_dims(config), 'v': hf['vocab_size']}
  problems, missing, wanted = [], [], set()
  for _, name, tensor in _tensors(config, hf['model_type']):
    stored = read.stored_name(name)
    if stored is None:
      missing.append(name)
      why = (
        ' (tie_word_embeddings is false: the untied head is needed)' if tensor is _LM_HEAD else ''
      )
      problems.append(f'{name}: missing{why}')
      continue
    wanted.add(stored)
    spec = read.spec(stored)
    where = f'{stored} ({os.path.basename(spec.file)})'
    if spec.dtype not in FLOAT_DTYPES:
      problems.append(
        f'{where}: dtype {spec.dtype}; only float tensors ({", ".join(FLOAT_DTYPES)}) are '
        'converted (a quantized checkpoint? use its float release)'
      )
    shape = _hf_shape(tensor, file_dims)
    if spec.shape != shape:
      if tensor.vocab_rows:
        hint = f': one row per token id, vocab_size={hf["vocab_size"]} in config.json'
      elif len(shape) == 2 and spec.shape == shape[::-1]:
        hint = ' (transposed)'
      else:
        hint = ''
      problems.append(f'{where}: shape {spec.shape}, expected {shape}{hint}')
  for stored in sorted(read.names() - wanted):
    if not _ignored(stored, config):
      problems.append(
        f'{stored} ({os.path.basename(read.spec(stored).file)}): not a tensor of this '
        f'{hf["model_type"]} model (it would be dropped)'
      )
  if not problems:
    return
  sizes = ', '.join(
    f'{key}={hf[key]}' for key in _REQUIRED_SIZES['gpt2' if hf['model_type'] == 'gpt2' else 'llama']
  )
  listed = problems[:_MAX_LISTED] + (
    [f'... and {len(problems) - _MAX_LISTED} more'] if len(problems) > _MAX_LISTED else []
  )
  error = MissingTensorError if missing else HfCheckpointError
  raise error(
    f'{hf_dir}: the tensors do not match its config.json ({sizes}; '
    f'tie_word_embeddings={config.tie_embeddings}), {len(problems)} problem(s):\n  '
    + '\n  '.join(listed)
    + '\nThe weights and config.json must be of the same model: download it again, or fix '
    'config.json.'
  )


def from_pretrained(hf_dir: str, **overrides) -> tuple[ModelConfig, dict[str, Any]]:
  """Reads a Hugging Face checkpoint folder into (ModelConfig, params) for `model.Decoder`.

  Args:
    hf_dir: folder with config.json and model.safetensors (or sharded files with
      model.safetensors.index.json) of a GPT2LMHeadModel, LlamaForCausalLM, MistralForCausalLM,
      Qwen2ForCausalLM, Qwen3ForCausalLM or Gemma3ForCausalLM.
    **overrides: ModelConfig fields to set (dtype, remat_policy, scan_layers, ...). With
      scan_layers=True the layers come stacked, as nn.scan stores them.

  Returns:
    The config and the unboxed float32 'params' collection (numpy arrays).

  Raises:
    HfCheckpointError: A file is not what it should be (see the module docstring); the message
      names it. MissingTensorError (also a KeyError) when tensors are missing.
    FileNotFoundError: No config.json or no safetensors files.
  """
  hf, config = read_model_config(hf_dir, **overrides)
  read = _Tensors(hf_dir)
  _check_tensors(read, config, hf, hf_dir)
  fresh = PAUSE_ID_KEY not in hf
  dims = _dims(config)
  params: dict[str, Any] = {}
  for layer, name, tensor in _tensors(config, hf['model_type']):
    value = read(name)
    if tensor.vocab_rows and fresh:
      value = _with_pause_rows(value, config.num_embeddings)
    for path, part in zip(tensor.ours, _to_ours(tensor, value, dims)):
      _put(params, config, layer, path.split('/'), part)
  logging.info(
    'Loaded %s (%s) with %d embedding rows; <pause> id %d.',
    hf_dir,
    hf['model_type'],
    config.num_embeddings,
    vocab_size(hf),
  )
  return config, params


# --- Export ------------------------------------------------------------------------------------


# ModelConfig fields beyond the Llama family's, at their "off" values: only Qwen3 (qk_norm,
# attention_head_dim, sliding layers) and Gemma 3 (all of them) hold other values.
_GEMMA_ONLY = dict(
  post_norms=False, scale_embeddings=False, query_pre_attn_scalar=None, rope_local_theta=None
)


def _family(config: ModelConfig, base_type: str | None) -> str:
  gemma_only = {key: getattr(config, key) for key in _GEMMA_ONLY}
  if (
    (config.position_embedding, config.norm, config.mlp_activation)
    == ('learned', 'layer_norm', 'gelu')
    and config.qkv_bias
    and config.dense_bias
    and not config.qk_norm
    and config.attention_head_dim is None
    and not config.has_sliding_layers
    and gemma_only == _GEMMA_ONLY
  ):
    return 'gpt2'
  rope_rms_swiglu = (config.position_embedding, config.norm, config.mlp_activation) == (
    'rope',
    'rms_norm',
    'swiglu',
  )
  if rope_rms_swiglu and not config.dense_bias and gemma_only == _GEMMA_ONLY:
    if config.qk_norm or config.attention_head_dim is not None or config.has_sliding_layers:
      if not config.qkv_bias:
        return 'qwen3'
    elif config.qkv_bias:
      return 'qwen2'
    else:
      return 'mistral' if base_type == 'mistral' else 'llama'
  if (
    (config.position_embedding, config.norm, config.mlp_activation)
    == ('rope', 'gemma_rms_norm', 'geglu')
    and not config.dense_bias
    and not config.qkv_bias
    and config.qk_norm
    and config.post_norms
    and config.scale_embeddings
    and config.rope_scaling != 'llama3'
  ):
    return GEMMA3
  raise ValueError(
    f'No Hugging Face architecture matches this ModelConfig ({config}): export '
    'needs the GPT-2 defaults, the Llama family (rope, rms_norm, swiglu, no '
    'output/MLP biases; q/k/v biases make it Qwen2; q/k norms, a head size of its own or '
    'sliding layers make it Qwen3, without q/k/v biases), or Gemma 3 (rope, gemma_rms_norm, '
    'geglu, qk_norm, post_norms, scale_embeddings, no biases).'
  )


_ARCHITECTURES = {
  'gpt2': 'GPT2LMHeadModel',
  'llama': 'LlamaForCausalLM',
  'mistral': 'MistralForCausalLM',
  'qwen2': 'Qwen2ForCausalLM',
  'qwen3': 'Qwen3ForCausalLM',
  GEMMA3: 'Gemma3ForCausalLM',
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
  'sliding_window_pattern',  # Gemma 3's older layer_types, which export always writes
  '_sliding_window_pattern',
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
    rope_theta=config.rope_theta,
  )
  if family == GEMMA3:
    scalar = config.query_pre_attn_scalar
    if scalar is None:
      scalar = config.head_dim  # what None means here: 1/sqrt(head_dim)
    out.update(
      hidden_activation='gelu_pytorch_tanh',
      query_pre_attn_scalar=int(scalar) if float(scalar).is_integer() else scalar,
      attention_bias=False,
      attn_logit_softcapping=None,
      final_logit_softcapping=None,
      use_bidirectional_attention=False,
    )
    out.pop('hidden_act', None)
  else:
    out['hidden_act'] = 'silu'
  if family in ('llama', 'qwen3'):
    out.update(attention_bias=False, mlp_bias=False)
  if family == 'qwen3' or family == GEMMA3:
    sliding = config.sliding_layers()
    out['layer_types'] = ['sliding_attention' if s else 'full_attention' for s in sliding]
    out['sliding_window'] = config.sliding_window if config.has_sliding_layers else None
    if family == 'qwen3':
      out['use_sliding_window'] = config.has_sliding_layers
      out['max_window_layers'] = sliding.index(True) if any(sliding) else config.num_layers
      out.pop('mlp_bias')  # Qwen3Config has no such field
    else:
      local = config.rope_theta if config.rope_local_theta is None else config.rope_local_theta
      out['rope_local_base_freq'] = local
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
  A non-finite tensor stops the write (an export of it would load, and generate garbage).
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
      bad = array.size - np.count_nonzero(np.isfinite(array))
      if bad:
        raise HfCheckpointError(
          f'{name} has {bad} non-finite value(s) (NaN or inf); nothing was exported. Export an '
          'earlier checkpoint step, from before the run diverged.'
        )
      f.write(array.tobytes())


def model_files(folder: str) -> list[str]:
  """The files of `folder` that belong to a Hugging Face model (`MODEL_FILE_PATTERNS`)."""
  if not os.path.isdir(folder):
    return []
  return sorted(
    name
    for name in os.listdir(folder)
    if any(fnmatch.fnmatch(name, pattern) for pattern in MODEL_FILE_PATTERNS)
  )


def check_export_target(hf_dir: str, overwrite: bool = False) -> None:
  """An export may go to `hf_dir`: a new or model-free folder, or any folder with `overwrite`.

  Checked before the checkpoint is read, so a refused export costs nothing.
  """
  if os.path.exists(hf_dir) and not os.path.isdir(hf_dir):
    raise ExportTargetError(f'{hf_dir} is a file, not a folder: choose a folder to export into.')
  existing = model_files(hf_dir)
  if existing and not overwrite:
    raise ExportTargetError(
      f'{hf_dir} already holds a model ({", ".join(existing[:6])}'
      f'{", ..." if len(existing) > 6 else ""}): choose a new folder, or pass --overwrite '
      '(overwrite=True) to replace it; its model and tokenizer files are removed first.'
    )


def _move_into_place(staging: str, hf_dir: str) -> None:
  """Moves the complete export from `staging` to `hf_dir`.

  A new target is one rename. Into an existing folder (one the user keeps other files in, or
  an old model being overwritten), the old model files go first, config.json before its
  weights, and the new files come in with config.json last: a process killed in between leaves
  a folder without config.json, which nothing loads as a model.
  """
  if not os.path.exists(hf_dir):
    os.rename(staging, hf_dir)
    return
  old = model_files(hf_dir)
  for name in sorted(old, key=lambda n: n != CONFIG_FILE):
    os.remove(os.path.join(hf_dir, name))
  for name in sorted(os.listdir(staging), key=lambda n: n == CONFIG_FILE):
    os.replace(os.path.join(staging, name), os.path.join(hf_dir, name))
  os.rmdir(staging)
  if old:
    logging.info('Replaced the model in %s (removed %s).', hf_dir, ', '.join(old))


def save_pretrained(
  config: ModelConfig,
  params: dict[str, Any],
  hf_dir: str,
  *,
  pause_id: int | None = None,
  base_dir: str | None = None,
  overwrite: bool = False,
) -> None:
  """Writes config.json + model.safetensors (+ tokenizer files with <pause>) to hf_dir.

  All `num_embeddings` rows are exported (the pause row and alignment padding included), so
  `vocab_size` is the table size and `pause_token_id` records where the pause is; transformers
  keeps that key, and `from_pretrained` reads it back to append nothing.

  The files are written into a temporary folder beside hf_dir (`.NAME.partial-*`) and moved
  into place only once all of them are complete, so a failure half-way leaves no folder that
  looks like an export.

  Args:
    config: the model's config.
    params: its unboxed params (scanned or not); numpy or jax arrays.
    hf_dir: output folder (created).
    pause_id: the `<pause>` id (the tokenizer's size); recorded in config.json and added to the
      tokenizer. None when unknown.
    base_dir: a Hugging Face folder the model came from (`convert --from_hf` keeps one as
      MODEL_DIR/hf_base): its other config keys and its tokenizer files are carried over.
    overwrite: replace a model already in hf_dir (its model and tokenizer files are removed
      first; other files stay). Without it such a folder is refused.

  Raises:
    ExportTargetError: hf_dir holds a model and overwrite is False, or is a file.
    HfCheckpointError: base_dir's files are invalid, or a tensor is not finite.
  """
  base = read_config(base_dir) if base_dir else None
  out = hf_config(config, pause_id, base)
  if base_dir:
    check_tokenizer_files(base_dir, pause_id)
  target = os.path.abspath(os.fspath(hf_dir))
  check_export_target(target, overwrite)
  parent = os.path.dirname(target)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=f'.{os.path.basename(target)}.partial-', dir=parent)
  try:
    write_safetensors(
      os.path.join(staging, SINGLE_FILE), list(_hf_tensors(config, params, out['model_type']))
    )
    if base_dir and os.path.exists(os.path.join(base_dir, 'tokenizer.json')):
      _export_tokenizer(base_dir, staging, pause_id)
    with open(os.path.join(staging, CONFIG_FILE), 'w') as f:
      json.dump(out, f, indent=2)
    _move_into_place(staging, target)
  finally:
    shutil.rmtree(staging, ignore_errors=True)  # gone already when the export was moved


def _read_tokenizer(path: str):
  """The parsed tokenizer.json; one the tokenizers library cannot read is named."""
  import tokenizers  # Only tokenizer files need it.

  try:
    return tokenizers.Tokenizer.from_file(path)
  except Exception as e:  # The library raises a bare Exception for every unreadable file.
    raise HfCheckpointError(
      f"{path} is not a tokenizer the tokenizers library can read ({e}): use the model's own "
      'tokenizer.json, downloaded again.'
    ) from None


def _has_pause_at(tokenizer, pause_id: int, path: str) -> bool:
  """Whether `<pause>` is already `pause_id` (an export's tokenizer); an ordinary token there,
  or ids beyond it, would make the pause collide with text, and are refused."""
  if tokenizer.token_to_id(vocab_lib.PAUSE_TEXT) == pause_id:
    return True
  size = tokenizer.get_vocab_size(with_added_tokens=True)
  if pause_id < size:
    raise HfCheckpointError(
      f'{path} already has {size} ids, so <pause> id {pause_id} would be an ordinary token: '
      "the tokenizer must be the model's own (config.json's vocab_size counts all its tokens), "
      "and --pause_id, when given, the model's vocab_size before pause-lm added its rows."
    )
  return False


def check_tokenizer_files(folder: str, pause_id: int | None) -> None:
  """The tokenizer files in `folder` are readable as export reads them, and `<pause>` fits at
  `pause_id`: checked when they are taken (`--from_hf`), not when an export fails half-way."""
  path = os.path.join(folder, 'tokenizer.json')
  if os.path.exists(path):
    tokenizer = _read_tokenizer(path)
    if pause_id is not None:
      _has_pause_at(tokenizer, pause_id, path)
  for name in TOKENIZER_FILES[1:]:
    path = os.path.join(folder, name)
    if os.path.exists(path) and not isinstance(_read_json(path), dict):
      raise HfCheckpointError(f'{path} is not a JSON object of tokenizer settings: {_REDOWNLOAD}.')


def _export_tokenizer(base_dir: str, hf_dir: str, pause_id: int | None) -> None:
  """Copies the tokenizer files, with `<pause>` as a special added token at `pause_id`.

  The token is special, so HF tools never split it and `skip_special_tokens` hides it; prompts
  for an M-pause evaluation end with M copies of the text `<pause>`. The tokenizers library
  numbers added tokens consecutively, so when the model's vocab_size exceeds the tokenizer's size
  (Qwen2.5 pads its table) the rows in between get placeholder special tokens first. A tokenizer
  that has `<pause>` at `pause_id` already (an export converted back) is copied as it is.
  """
  import tokenizers  # Only exporting a tokenizer needs it.

  for name in TOKENIZER_FILES:
    if os.path.exists(os.path.join(base_dir, name)):
      shutil.copyfile(os.path.join(base_dir, name), os.path.join(hf_dir, name))
  if pause_id is None:
    return
  path = os.path.join(hf_dir, 'tokenizer.json')
  tokenizer = _read_tokenizer(path)
  if _has_pause_at(tokenizer, pause_id, path):
    return
  size = tokenizer.get_vocab_size(with_added_tokens=True)
  placeholders = [f'<pause_lm_unused_{i}>' for i in range(size, pause_id)]
  tokenizer.add_special_tokens(
    [
      tokenizers.AddedToken(t, special=True, normalized=False)
      for t in placeholders + [vocab_lib.PAUSE_TEXT]
    ]
  )
  if tokenizer.token_to_id(vocab_lib.PAUSE_TEXT) != pause_id:
    raise HfCheckpointError(
      f'<pause> got id {tokenizer.token_to_id(vocab_lib.PAUSE_TEXT)} in the tokenizer of '
      f'{base_dir}, not {pause_id}: it has a token <pause> of its own; use a tokenizer without.'
    )
  tokenizer.save(path)
  path = os.path.join(hf_dir, 'tokenizer_config.json')
  settings = _read_json(path) if os.path.exists(path) else {}
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
