"""Architecture, masks, numerics and sharding metadata of the decoder."""

import functools

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pause_lm.model.transformer import _within_window
from pause_lm.model.transformer import attention_mask
from pause_lm.model.transformer import Decoder, ModelConfig

from conftest import LLAMA_FAMILY

NUM_EMBEDDINGS = 40
PAUSE = 37
UNUSED_ROW = 39
SMALL = dict(
  num_embeddings=NUM_EMBEDDINGS, num_layers=2, num_heads=2, emb_dim=32, mlp_dim=64, max_len=32
)
# The Llama family at its most different from GPT-2: multi-query attention, llama3 rope scaling
# (its original length small enough that the blend matters here), SwiGLU, no biases, tied head.
LLAMA = dict(
  num_kv_heads=1,
  rope_scaling='llama3',
  rope_scaling_factor=8.0,
  rope_original_max_len=16,
  **LLAMA_FAMILY,
)
SLIDING, FULL = 'sliding_attention', 'full_attention'
# Gemma 3 (Qwen3's q/k norms and head size included): (1 + w) norms before and after attention
# and the MLP, GeGLU, scaled embeddings, query_pre_attn_scalar, a head size of its own, and a
# sliding first layer whose window (3) is shorter than the test sequences.
GEMMA3 = dict(
  num_kv_heads=1,
  attention_head_dim=24,
  norm='gemma_rms_norm',
  position_embedding='rope',
  mlp_activation='geglu',
  qkv_bias=False,
  dense_bias=False,
  tie_embeddings=True,
  qk_norm=True,
  post_norms=True,
  scale_embeddings=True,
  query_pre_attn_scalar=20.0,
  rope_local_theta=10_000.0,
  layer_types=(SLIDING, FULL),
  sliding_window=3,
)
FAMILIES = {'gpt2': {}, 'llama': LLAMA}
# Gemma 3 joins only the tests its own features change the answer of (time: the suite's budget).
WITH_GEMMA3 = {**FAMILIES, 'gemma3': GEMMA3}


def _config_from_gin(path, *bindings):
  gin.clear_config()
  try:
    gin.parse_config_files_and_bindings([path], list(bindings))
    return ModelConfig()
  finally:
    gin.clear_config()


def _param_count(config):
  shapes = jax.eval_shape(
    lambda: Decoder(config).init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
  )
  return sum(leaf.size for leaf in jax.tree.leaves(shapes['params']))


@pytest.mark.parametrize('scan_layers', [False, True])
@pytest.mark.parametrize(
  'gin_file, total', [('gin/models/130m.gin', 136_237_056), ('gin/models/1b.gin', 1_345_085_440)]
)
def test_table5_parameter_totals(gin_file, total, scan_layers):
  config = _config_from_gin(
    gin_file, 'NUM_EMBEDDINGS = 32297', f'ModelConfig.scan_layers = {scan_layers}'
  )
  assert _param_count(config) == total


def test_gin_files_leave_num_embeddings_to_the_caller():
  for name in ('tiny', '130m', '1b'):
    assert _config_from_gin(f'gin/models/{name}.gin').num_embeddings is None
  with pytest.raises(ValueError, match='num_embeddings'):
    Decoder(ModelConfig()).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))


def test_flops_per_token_formula():
  config = _config_from_gin('gin/models/130m.gin', 'NUM_EMBEDDINGS = 32297')
  matmul = 12 * (4 * 768**2 + 2 * 768 * 3072) + 768 * 32297
  assert config.flops_per_token(2048) == 6 * matmul + 12 * 12 * 768 * 2048


@functools.cache
def _init(**overrides):
  config = ModelConfig(**{**SMALL, **overrides})
  variables = jax.jit(Decoder(config).init)(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
  return config, variables['params']


@functools.cache
def _drawn(**overrides):
  """`_init` for Gemma 3: its parameters drawn from the shapes (boxed with their axis names),
  N(0, 0.02) as the initialiser's, since compiling its init takes seconds."""
  config = ModelConfig(**{**SMALL, **overrides})
  shapes = jax.eval_shape(Decoder(config).init, jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
  rng = np.random.default_rng(0)
  params = jax.tree.map(
    lambda s: jnp.asarray(rng.normal(0.0, 0.02, s.shape), s.dtype), shapes['params']
  )
  return config, params


@functools.partial(jax.jit, static_argnames='config')
def _logits(params, config, tokens, positions=None, segment_ids=None, causal_attention=None):
  return Decoder(config).apply({'params': params}, tokens, positions, segment_ids, causal_attention)


def _tokens(batch, length, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(1, 30, (batch, length)), jnp.int32)


def _perturbed(tokens, position):
  return tokens.at[:, position].set((tokens[:, position] + 5) % 30 + 1)


def test_tiny_config_runs_and_returns_float32_logits():
  config = _config_from_gin('gin/models/tiny.gin', 'NUM_EMBEDDINGS = 64')
  variables = jax.jit(Decoder(config).init)(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
  logits = jax.jit(Decoder(config).apply)(variables, _tokens(2, 16))
  assert logits.shape == (2, 16, 64) and logits.dtype == jnp.float32


def test_bfloat16_compute_keeps_float32_params_and_logits():
  config, params = _init(dtype='bfloat16')
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  logits = _logits(params, config, _tokens(2, 8))
  assert logits.dtype == jnp.float32
  reference = _logits(params, ModelConfig(**SMALL), _tokens(2, 8))
  np.testing.assert_allclose(logits, reference, atol=0.05)


@pytest.mark.parametrize('family', FAMILIES)
def test_causal_attention_never_sees_the_future(family):
  config, params = _init(**FAMILIES[family])
  tokens = _tokens(2, 10)
  base = _logits(params, config, tokens)
  for j in range(10):
    changed = _logits(params, config, _perturbed(tokens, j))
    np.testing.assert_array_equal(changed[:, :j], base[:, :j])
    # ... and every position from j on does see the change.
    assert np.abs(changed[:, j:] - base[:, j:]).max(axis=-1).min() > 1e-6


@pytest.mark.parametrize('family', FAMILIES)
def test_plain_causal_path_equals_the_explicit_causal_mask(family):
  # Without prefix or segments attention runs `is_causal` (no mask array, cuDNN's fused kernel
  # on GPUs); an all-zero prefix builds the explicit mask and must give the same logits.
  config, params = _init(**FAMILIES[family])
  tokens = _tokens(2, 10)
  np.testing.assert_allclose(
    _logits(params, config, tokens),
    _logits(params, config, tokens, causal_attention=jnp.zeros_like(tokens)),
    rtol=1e-6,
    atol=1e-6,
  )


def test_gpu_gin_file_selects_cudnn_attention():
  assert _config_from_gin('gin/gpu.gin').attention_impl == 'cudnn'


def test_prefix_lm_is_bidirectional_over_the_prefix_only():
  config, params = _init()
  tokens = _tokens(2, 10)
  prefix_len = 6  # BOS + 5 prefix tokens: decoder_causal_attention is 1 there
  causal = jnp.broadcast_to(jnp.arange(10) < prefix_len, (2, 10)).astype(jnp.int32)
  base = _logits(params, config, tokens, causal_attention=causal)
  for j in range(10):
    changed = _logits(params, config, _perturbed(tokens, j), causal_attention=causal)
    if j < prefix_len:
      # A later prefix token reaches every earlier prefix position.
      assert np.all(np.abs(changed[:, :j] - base[:, :j]).max(axis=-1) > 1e-6)
    else:
      # A target token reaches no earlier position, prefix or target.
      np.testing.assert_array_equal(changed[:, :j], base[:, :j])
  # And the prefix region differs from plain causal attention.
  assert np.abs(base[:, :prefix_len] - _logits(params, config, tokens)[:, :prefix_len]).max() > 1e-4


def test_prefix_region_is_per_example():
  config, params = _init()
  tokens = _tokens(2, 8)
  causal = jnp.asarray([[1, 1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 0, 0]], jnp.int32)
  both = _logits(params, config, tokens, causal_attention=causal)
  for row in range(2):
    alone = _logits(params, config, tokens[row : row + 1], causal_attention=causal[row : row + 1])
    np.testing.assert_allclose(both[row : row + 1], alone, atol=1e-5)


@pytest.mark.parametrize('family', FAMILIES)
@pytest.mark.parametrize('prefix_lm', [False, True])
def test_packed_segments_match_unpacked(prefix_lm, family):
  # With rotary embeddings this also pins that RoPE angles come from decoder_positions.
  config, params = _init(**FAMILIES[family])
  first, second = _tokens(1, 5, seed=1), _tokens(1, 7, seed=2)
  packed = jnp.concatenate([first, second, jnp.zeros((1, 4), jnp.int32)], axis=1)
  segment_ids = jnp.asarray([[1] * 5 + [2] * 7 + [0] * 4])
  positions = jnp.asarray([list(range(5)) + list(range(7)) + [0] * 4])
  causal = unpacked_causal = {}
  if prefix_lm:
    causal = {'causal_attention': jnp.asarray([[1] * 3 + [0] * 2 + [1] * 4 + [0] * 7])}
    unpacked_causal = [
      {'causal_attention': jnp.asarray([[1] * 3 + [0] * 2])},
      {'causal_attention': jnp.asarray([[1] * 4 + [0] * 3])},
    ]
  out = _logits(params, config, packed, positions, segment_ids, **causal)
  want_first = _logits(params, config, first, **(unpacked_causal[0] if prefix_lm else {}))
  want_second = _logits(params, config, second, **(unpacked_causal[1] if prefix_lm else {}))
  np.testing.assert_allclose(out[:, :5], want_first, atol=1e-5)
  np.testing.assert_allclose(out[:, 5:12], want_second, atol=1e-5)


def test_gradient_reaches_the_pause_row_and_not_an_unused_row():
  config, params = _init()
  tokens = _tokens(2, 10).at[:, 6:9].set(PAUSE)

  def loss(params, tokens):
    return jnp.sum(jax.nn.log_softmax(_logits(params, config, tokens))[..., 3])

  grads = jax.grad(loss)(params, tokens)['token_embed']['embedding'].value
  assert float(jnp.abs(grads[PAUSE]).sum()) > 0
  assert float(jnp.abs(grads[UNUSED_ROW]).sum()) == 0
  no_pause_grads = jax.grad(loss)(params, _tokens(2, 10))['token_embed']['embedding'].value
  assert float(jnp.abs(no_pause_grads[PAUSE]).sum()) == 0


def _stack_layers(params, num_layers):
  """Turns layers_0..layers_{n-1} into the scanned layout: one 'layers' tree, leading axis n."""
  params = nn.meta.unbox(params)
  layers = [params.pop(f'layers_{i}') for i in range(num_layers)]
  params['layers'] = jax.tree.map(lambda *xs: jnp.stack(xs), *layers)
  return params


@pytest.mark.parametrize(
  'family, overrides',
  [
    ('gpt2', dict(scan_layers=True)),
    ('gpt2', dict(remat_policy='full')),
    ('gpt2', dict(remat_policy='dots_saveable')),
    ('gpt2', dict(scan_layers=True, remat_policy='dots_with_no_batch_dims_saveable')),
    ('llama', dict(scan_layers=True, remat_policy='full')),
  ],
)
def test_scan_and_remat_compute_the_same_function(family, overrides):
  plain_config, params = _init(**FAMILIES[family])
  config = ModelConfig(**{**SMALL, **FAMILIES[family], **overrides})
  variant_params = _stack_layers(params, SMALL['num_layers']) if config.scan_layers else params
  tokens = _tokens(2, 8)
  causal = jnp.asarray([[1] * 3 + [0] * 5] * 2)

  def loss(params, config):
    return jnp.mean(jax.nn.log_softmax(_logits(params, config, tokens, causal_attention=causal)))

  np.testing.assert_allclose(
    _logits(variant_params, config, tokens, causal_attention=causal),
    _logits(params, plain_config, tokens, causal_attention=causal),
    atol=1e-5,
  )
  grads = jax.grad(loss)(variant_params, config)
  want = jax.grad(loss)(params, plain_config)
  if config.scan_layers:
    want = _stack_layers(want, SMALL['num_layers'])
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
    nn.meta.unbox(grads),
    nn.meta.unbox(want),
  )


@pytest.mark.parametrize(
  'family, scan_layers',
  [(f, s) for f in FAMILIES for s in (False, True)] + [('gemma3', False)],
)
def test_every_parameter_has_logical_axis_names(scan_layers, family):
  init = _drawn if family == 'gemma3' else _init
  config, params = init(scan_layers=scan_layers, **WITH_GEMMA3[family])
  leaves = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert leaves and all(isinstance(leaf, nn.Partitioned) for leaf in leaves)
  known = {None, 'batch', 'length', 'embed', 'heads', 'kv_heads', 'kv', 'mlp', 'vocab', 'layers'}
  for leaf in leaves:
    assert len(leaf.names) == leaf.value.ndim and set(leaf.names) <= known
  block_leaves = jax.tree.leaves(
    params['layers' if scan_layers else 'layers_0'], is_leaf=lambda x: isinstance(x, nn.Partitioned)
  )
  assert all((leaf.names[0] == 'layers') == scan_layers for leaf in block_leaves)


def test_dropout_is_active_only_when_not_deterministic():
  config = ModelConfig(**{**SMALL, 'dropout_rate': 0.5})
  params = _init()[1]
  tokens = _tokens(2, 8)
  apply = functools.partial(Decoder(config).apply, {'params': params}, tokens)
  np.testing.assert_array_equal(apply(), apply(deterministic=True))
  dropped = apply(deterministic=False, rngs={'dropout': jax.random.key(1)})
  assert np.abs(dropped - apply()).max() > 1e-3


def test_rejects_unknown_remat_policy():
  with pytest.raises(ValueError, match='remat_policy'):
    ModelConfig(remat_policy='sometimes')


def test_llama_family_parameters_have_the_llama_shapes():
  config, params = _init(**LLAMA)
  params = nn.meta.unbox(params)
  layer = params['layers_0']
  assert set(params) == {'token_embed', 'layers_0', 'layers_1', 'final_norm'}  # tied, no positions
  assert layer['attention']['query']['kernel'].shape == (32, 2, 16)
  assert layer['attention']['key']['kernel'].shape == (32, 1, 16)  # one key/value head (MQA)
  assert set(layer['attention']['value']) == {'kernel'}  # no biases
  assert set(layer['mlp']) == {'wi_0', 'wi_1', 'wo'}
  assert set(layer['pre_mlp_norm']) == {'scale'}  # RMSNorm
  qwen = nn.meta.unbox(_init(**{**LLAMA, 'qkv_bias': True})[1])['layers_0']['attention']
  assert qwen['key']['bias'].shape == (1, 16) and set(qwen['out']) == {'kernel'}


def test_tied_head_is_the_transposed_embedding():
  config, params = _init(**LLAMA)
  params = nn.meta.unbox(params)
  logits, state = Decoder(config).apply(
    {'params': params}, _tokens(1, 6), capture_intermediates=True
  )
  hidden = state['intermediates']['final_norm']['__call__'][0]
  np.testing.assert_allclose(logits, hidden @ params['token_embed']['embedding'].T, atol=1e-5)


def test_rope_is_relative_and_uses_the_positions():
  config, params = _init(**LLAMA)
  tokens = _tokens(2, 8)
  positions = jnp.broadcast_to(jnp.arange(8), (2, 8))
  base = _logits(params, config, tokens, positions)
  np.testing.assert_allclose(_logits(params, config, tokens, positions + 5), base, atol=1e-4)
  # Without the rescaling the frequencies differ: rope_scaling is not a no-op here.
  plain = ModelConfig(**{**SMALL, **LLAMA, 'rope_scaling': None})
  assert np.abs(_logits(params, plain, tokens, positions) - base).max() > 1e-4


def test_flops_count_grouped_query_attention_and_swiglu():
  config = ModelConfig(**{**SMALL, **LLAMA})
  d, f, kv = 32, 64, 16
  matmul = 2 * (2 * d * d + 2 * d * kv + 3 * d * f) + d * NUM_EMBEDDINGS
  assert config.matmul_params() == matmul
  assert config.flops_per_token(32) == 6 * matmul + 12 * 2 * d * 32


def test_smollm_gin_file_has_smollm_135m_parameter_count():
  config = _config_from_gin('gin/models/smollm_135m.gin', 'NUM_EMBEDDINGS = 49152')
  assert _param_count(config) == 134_515_008


@pytest.mark.parametrize(
  'name, vocab, total',
  [
    # transformers' own counts of Qwen3ForCausalLM / Gemma3ForCausalLM at these configs.
    ('qwen3_0_6b', 151_936, 596_049_920),
    ('gemma3_270m', 262_144, 268_098_176),
    ('gemma3_1b', 262_144, 999_885_952),
  ],
)
def test_qwen3_and_gemma3_gin_files_have_their_parameter_counts(name, vocab, total):
  # Scanned: one layer to trace (the counts are the same, test_table5_parameter_totals).
  config = _config_from_gin(
    f'gin/models/{name}.gin', f'NUM_EMBEDDINGS = {vocab}', 'ModelConfig.scan_layers = True'
  )
  assert _param_count(config) == total
  padded = _config_from_gin(f'gin/models/{name}.gin')
  assert padded.num_embeddings == -(-(vocab + 1) // 128) * 128  # + <pause>, as convert writes


def test_flops_count_a_head_size_of_its_own():
  config = ModelConfig(**{**SMALL, **GEMMA3})
  d, f, q, kv = 32, 64, 2 * 24, 24
  matmul = 2 * (2 * d * q + 2 * d * kv + 3 * d * f) + d * NUM_EMBEDDINGS
  assert config.matmul_params() == matmul


def _windowed(window, **overrides):
  """GEMMA3 with both layers sliding (by window 3 a position sees 2 * 2 tokens back)."""
  return ModelConfig(
    **{**SMALL, **GEMMA3, 'layer_types': (SLIDING, SLIDING), 'sliding_window': window, **overrides}
  )


def test_sliding_window_covering_everything_is_exactly_full_attention():
  _, params = _drawn(**GEMMA3)
  wide = _windowed(SMALL['max_len'], rope_local_theta=None)
  full = ModelConfig(**{**SMALL, **GEMMA3, 'layer_types': None, 'rope_local_theta': None})
  tokens = _tokens(2, 10)
  causal = jnp.asarray([[1] * 3 + [0] * 7, [1] * 6 + [0] * 4])
  segments = jnp.asarray([[1] * 4 + [2] * 6] * 2)
  positions = jnp.asarray([list(range(4)) + list(range(6))] * 2)
  np.testing.assert_array_equal(
    _logits(params, wide, tokens, positions, segments, causal),
    _logits(params, full, tokens, positions, segments, causal),
  )
  # Such a window is not applied at all; applied, it would leave every mask as it is.
  for mask in (None, attention_mask(10, causal), attention_mask(10, causal, segments)):
    within = _within_window(mask, positions, positions, jnp.asarray(True), window=10)
    want = attention_mask(10) if mask is None else mask
    np.testing.assert_array_equal(within, jnp.broadcast_to(want, within.shape))
    narrower = _within_window(mask, positions, positions, jnp.asarray(True), window=3)
    assert not np.array_equal(narrower, within)


def test_sliding_window_limits_what_each_position_sees():
  """Two packed segments of 12 (positions restart at 12), each a prefix-LM example with a
  prefix of 8: within the prefix the window holds both ways, after it causally, and never
  across the segments."""
  _, params = _drawn(**GEMMA3)
  config = _windowed(3)
  tokens = _tokens(1, 24)
  causal = jnp.asarray([([1] * 8 + [0] * 4) * 2])
  segments = jnp.asarray([[1] * 12 + [2] * 12])
  positions = jnp.asarray([list(range(12)) * 2])
  base = _logits(params, config, tokens, positions, segments, causal)
  reach = 2 * (3 - 1)  # two sliding layers, each 2 positions back (and forward in the prefix)
  for j in (1, 5, 9, 12 + 5):
    changed = _logits(params, config, _perturbed(tokens, j), positions, segments, causal)
    seen = np.abs(changed - base).max(axis=(0, 2)) > 1e-6
    start = 12 * (j // 12)
    lowest = max(j - reach, start) if j - start < 8 else j
    want = (np.arange(24) >= lowest) & (np.arange(24) <= min(j + reach, start + 11))
    np.testing.assert_array_equal(seen, want)


@pytest.mark.parametrize(
  'overrides, message',
  [
    (dict(num_kv_heads=3), 'num_kv_heads'),
    (dict(norm='batch_norm'), 'norm'),
    (dict(rope_scaling='yarn'), 'rope_scaling'),
    (dict(mlp_activation='relu'), 'mlp_activation'),
    (dict(position_embedding='alibi'), 'position_embedding'),
    (dict(attention_impl='cudnn_fused'), 'attention_impl'),
    (dict(mlp_activation='reglu'), 'mlp_activation'),
    (dict(layer_types=(SLIDING,), sliding_window=4), 'layer_types has 1 entries'),
    (dict(layer_types=(SLIDING, 'chunked'), sliding_window=4), 'layer_types must hold'),
    (dict(layer_types=(SLIDING, FULL)), 'sliding_window is None'),
    (dict(sliding_window=0), 'sliding_window must be a positive'),
    (dict(attention_head_dim=-8), 'attention_head_dim'),
  ],
)
def test_rejects_unknown_family_settings(overrides, message):
  with pytest.raises(ValueError, match=message):
    ModelConfig(**{**SMALL, **overrides})
