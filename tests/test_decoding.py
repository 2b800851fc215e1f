"""Cached decoding and scoring must reproduce the plain forward pass that training runs."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pause_lm.model import decoding
from pause_lm.model.transformer import Decoder, ModelConfig

from conftest import LLAMA_FAMILY

VOCAB = 50  # ordinary token ids 0..49
PAUSE = VOCAB  # the pause row
NUM_EMBEDDINGS = 56  # + alignment padding rows
CONFIG = ModelConfig(
  num_embeddings=NUM_EMBEDDINGS, num_layers=2, num_heads=2, emb_dim=32, mlp_dim=64, max_len=64
)


STEPS = 6  # one decode length (and pause counts 0 or 4) everywhere keeps compilations shared


# The Llama family: grouped-query attention (2 query heads per key/value head), rotary positions
# with llama3 scaling, SwiGLU, tied head; the cache then holds fewer heads and rotated keys.
LLAMA_CONFIG = dataclasses.replace(
  CONFIG,
  num_heads=4,
  num_kv_heads=2,
  rope_scaling='llama3',
  rope_scaling_factor=4.0,
  rope_original_max_len=16,
  **LLAMA_FAMILY,
)


# Gemma 3: (1 + w) norms around attention and the MLP, GeGLU, q/k norms, scaled embeddings, a
# head size of its own, one key/value head, and a sliding first layer whose window (3) is much
# shorter than the prefixes and generations: the cache must apply the window at every step.
GEMMA3_CONFIG = dataclasses.replace(
  CONFIG,
  num_heads=4,
  num_kv_heads=1,
  attention_head_dim=16,
  norm='gemma_rms_norm',
  position_embedding='rope',
  mlp_activation='geglu',
  qkv_bias=False,
  dense_bias=False,
  tie_embeddings=True,
  qk_norm=True,
  post_norms=True,
  scale_embeddings=True,
  query_pre_attn_scalar=12.0,
  rope_local_theta=10_000.0,
  layer_types=('sliding_attention', 'full_attention'),
  sliding_window=3,
)


@functools.cache
def _params(config=CONFIG):
  if config.post_norms:  # Gemma 3: drawn from the shapes, since compiling its init takes seconds
    return _drawn_params(config)
  init = jax.jit(Decoder(config).init)(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
  # Larger weights than the GPT-2 init make logits well separated, so greedy choices are stable
  # under float reordering and comparisons between code paths are meaningful.
  return jax.tree.map(lambda p: p * 10.0, init['params'])


def _drawn_params(config):
  """Parameters of `config`'s shapes (boxed with their axis names), N(0, 0.2) each: the scale
  `_params` gives the GPT-2 init, drawn in numpy without compiling the model's init."""
  shapes = jax.eval_shape(Decoder(config).init, jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
  rng = np.random.default_rng(0)
  return jax.tree.map(
    lambda s: jnp.asarray(rng.normal(0.0, 0.2, s.shape), s.dtype), shapes['params']
  )


def _prefixes(num_pauses):
  rng = np.random.default_rng(1)
  lengths = [7, 3, 11]
  width = max(lengths) + num_pauses
  prefixes = np.zeros((len(lengths), width), np.int32)
  for row, n in enumerate(lengths):
    prefixes[row, :n] = rng.integers(1, VOCAB, n)
    prefixes[row, n : n + num_pauses] = PAUSE
  return jnp.asarray(prefixes), jnp.asarray(lengths, np.int32) + num_pauses


@functools.partial(jax.jit, static_argnames='config')
def _forward(params, tokens, causal_attention=None, config=CONFIG):
  return Decoder(config).apply(
    {'params': params}, tokens, decoder_causal_attention=causal_attention
  )


def _reference_greedy(params, prefixes, lengths, steps, prefix_lm, config=CONFIG):
  """Greedy decoding by re-running the full forward pass on the whole sequence at every step."""
  all_tokens, all_logits = [], []
  for prefix, n in zip(np.asarray(prefixes), np.asarray(lengths)):
    sequence = [0] + list(prefix[:n])
    tokens, logits = [], []
    for _ in range(steps):
      # Right padding to a fixed width (one compilation); it lies in every real token's future.
      inputs = jnp.asarray([sequence + [0] * (CONFIG.max_len - len(sequence))], jnp.int32)
      causal = (jnp.arange(CONFIG.max_len) <= n)[None] if prefix_lm else None
      step_logits = np.asarray(_forward(params, inputs, causal, config))[0, len(sequence) - 1]
      token = int(np.argmax(step_logits[:VOCAB]))  # vocab_limit = VOCAB excludes the pause
      tokens.append(token)
      logits.append(step_logits)
      sequence.append(token)
    all_tokens.append(tokens)
    all_logits.append(logits)
  return np.array(all_tokens), np.array(all_logits)


@pytest.mark.parametrize('prefix_lm', [False, True])
@pytest.mark.parametrize('num_pauses', [0, 4])
def test_cached_greedy_matches_full_recompute(prefix_lm, num_pauses):
  params = _params()
  prefixes, lengths = _prefixes(num_pauses)
  steps = STEPS
  tokens, out_lengths, logits = decoding.generate(
    params,
    CONFIG,
    prefixes,
    lengths,
    max_decode_len=steps,
    prefix_lm=prefix_lm,
    eos_id=NUM_EMBEDDINGS,
    vocab_limit=VOCAB,
    return_logits=True,
  )
  want_tokens, want_logits = _reference_greedy(params, prefixes, lengths, steps, prefix_lm)
  np.testing.assert_array_equal(tokens, want_tokens)
  # Logits are O(10) with these weights; a wrong mask or position moves them by O(1).
  np.testing.assert_allclose(logits, want_logits, atol=1e-3, rtol=1e-4)
  np.testing.assert_array_equal(out_lengths, [steps] * 3)


def test_llama_family_cached_greedy_matches_full_recompute():
  params = _params(LLAMA_CONFIG)
  prefixes, lengths = _prefixes(4)
  tokens, _, logits = decoding.generate(
    params,
    LLAMA_CONFIG,
    prefixes,
    lengths,
    max_decode_len=STEPS,
    prefix_lm=True,
    eos_id=NUM_EMBEDDINGS,
    vocab_limit=VOCAB,
    return_logits=True,
  )
  want_tokens, want_logits = _reference_greedy(params, prefixes, lengths, STEPS, True, LLAMA_CONFIG)
  np.testing.assert_array_equal(tokens, want_tokens)
  np.testing.assert_allclose(logits, want_logits, atol=1e-3, rtol=1e-4)


def test_sliding_window_cached_greedy_matches_full_recompute():
  """Prefix-LM: the prefill's bidirectional window and the steps' causal one (the causal-only
  case is tests/test_hf.py's greedy decoding against transformers, window 4)."""
  params = _params(GEMMA3_CONFIG)
  prefixes, lengths = _prefixes(4)
  tokens, _, logits = decoding.generate(
    params,
    GEMMA3_CONFIG,
    prefixes,
    lengths,
    max_decode_len=STEPS,
    prefix_lm=True,
    eos_id=NUM_EMBEDDINGS,
    vocab_limit=VOCAB,
    return_logits=True,
  )
  want_tokens, want_logits = _reference_greedy(
    params, prefixes, lengths, STEPS, True, GEMMA3_CONFIG
  )
  np.testing.assert_array_equal(tokens, want_tokens)
  np.testing.assert_allclose(logits, want_logits, atol=1e-3, rtol=1e-4)


def test_sliding_window_covering_everything_decodes_as_full_attention():
  params = _params(GEMMA3_CONFIG)
  prefixes, lengths = _prefixes(4)
  kwargs = dict(
    max_decode_len=STEPS,
    prefix_lm=True,
    eos_id=NUM_EMBEDDINGS,
    vocab_limit=VOCAB,
    return_logits=True,
  )
  # At least as long as the cache (prefix + generated tokens): it hides no key.
  wide = dataclasses.replace(GEMMA3_CONFIG, sliding_window=CONFIG.max_len, rope_local_theta=None)
  full = dataclasses.replace(wide, layer_types=None, sliding_window=None)
  tokens, _, logits = decoding.generate(params, wide, prefixes, lengths, **kwargs)
  want_tokens, _, want_logits = decoding.generate(params, full, prefixes, lengths, **kwargs)
  np.testing.assert_array_equal(tokens, want_tokens)
  np.testing.assert_array_equal(logits, want_logits)


def test_prefix_lm_and_pauses_change_the_generation():
  # Guards the tests above against a model so degenerate that every setting decodes alike.
  params = _params()
  outputs = []
  for prefix_lm, num_pauses in [(False, 0), (True, 0), (False, 4)]:
    prefixes, lengths = _prefixes(num_pauses)
    _, _, logits = decoding.generate(
      params,
      CONFIG,
      prefixes,
      lengths,
      max_decode_len=STEPS,
      prefix_lm=prefix_lm,
      eos_id=NUM_EMBEDDINGS,
      vocab_limit=VOCAB,
      return_logits=True,
    )
    outputs.append(np.asarray(logits))
  assert np.abs(outputs[0] - outputs[1]).max() > 1e-3
  assert np.abs(outputs[0] - outputs[2]).max() > 1e-3


def test_stops_at_eos_per_example():
  params = _params()
  prefixes, lengths = _prefixes(4)
  free = decoding.generate(
    params,
    CONFIG,
    prefixes,
    lengths,
    max_decode_len=STEPS,
    prefix_lm=True,
    eos_id=NUM_EMBEDDINGS,
    vocab_limit=VOCAB,
  ).tokens
  eos = int(free[0, 2])
  tokens, out_lengths, _ = decoding.generate(
    params,
    CONFIG,
    prefixes,
    lengths,
    max_decode_len=STEPS,
    prefix_lm=True,
    eos_id=eos,
    vocab_limit=VOCAB,
  )
  free, tokens = np.asarray(free), np.asarray(tokens)
  for row in range(3):
    hits = np.flatnonzero(free[row] == eos)
    n = hits[0] + 1 if hits.size else STEPS
    assert out_lengths[row] == n
    np.testing.assert_array_equal(tokens[row, :n], free[row, :n])
    np.testing.assert_array_equal(tokens[row, n:], 0)
  assert out_lengths[0] <= 3


def _params_favouring(token_ids):
  """Params whose output projection strongly prefers the given ids."""
  params = jax.tree.map(lambda x: x, _params())  # a copy: _params() is cached
  kernel = params['logits']['kernel']
  boosted = kernel.value.at[:, token_ids].add(50.0 * jnp.sign(kernel.value[:, token_ids] + 1e-9))
  params['logits']['kernel'] = kernel.replace_boxed(boosted)
  return params


def test_never_emits_pause_or_padding_rows():
  params = _params_favouring(jnp.arange(VOCAB, NUM_EMBEDDINGS))
  prefixes, lengths = _prefixes(4)
  greedy = decoding.generate(
    params,
    CONFIG,
    prefixes,
    lengths,
    max_decode_len=STEPS,
    prefix_lm=True,
    eos_id=NUM_EMBEDDINGS,
    vocab_limit=VOCAB,
  ).tokens
  sampled = decoding.generate(
    params,
    CONFIG,
    prefixes,
    lengths,
    max_decode_len=STEPS,
    prefix_lm=True,
    eos_id=NUM_EMBEDDINGS,
    vocab_limit=VOCAB,
    temperature=5.0,
    rng=jax.random.key(3),
  ).tokens
  assert int(jnp.max(greedy)) < VOCAB
  assert int(jnp.max(sampled)) < VOCAB
  # Without the limit the favoured rows do win, so the assertions above can fail.
  unlimited = decoding.generate(
    params,
    CONFIG,
    prefixes,
    lengths,
    max_decode_len=STEPS,
    prefix_lm=True,
    eos_id=NUM_EMBEDDINGS,
    vocab_limit=NUM_EMBEDDINGS,
  ).tokens
  assert int(jnp.max(unlimited)) >= VOCAB


def test_top_1_sampling_is_greedy_and_sampling_varies():
  params = _params()
  prefixes, lengths = _prefixes(4)
  kwargs = dict(max_decode_len=STEPS, prefix_lm=True, eos_id=NUM_EMBEDDINGS, vocab_limit=VOCAB)
  greedy = decoding.generate(params, CONFIG, prefixes, lengths, **kwargs).tokens
  top1 = decoding.generate(
    params, CONFIG, prefixes, lengths, temperature=1.0, top_k=1, rng=jax.random.key(0), **kwargs
  ).tokens
  np.testing.assert_array_equal(greedy, top1)
  draws = [
    decoding.generate(
      params, CONFIG, prefixes, lengths, temperature=100.0, rng=jax.random.key(seed), **kwargs
    )[0]
    for seed in range(2)
  ]
  assert not np.array_equal(draws[0], draws[1])


def _prefix_lm_batch(prefixes, lengths, continuations):
  """seqio PrefixLMFeatureConverter layout: targets = prefix + continuation, shifted right."""
  rows = [list(p[:n]) + list(c) for p, n, c in zip(prefixes, lengths, continuations)]
  width = max(map(len, rows)) + 1
  targets = np.zeros((len(rows), width), np.int32)
  weights = np.zeros_like(targets)
  causal = np.zeros_like(targets)
  for i, (row, n) in enumerate(zip(rows, lengths)):
    targets[i, : len(row)] = row
    weights[i, n : len(row)] = 1
    causal[i, : n + 1] = 1
  inputs = np.pad(targets[:, :-1], ((0, 0), (1, 0)))
  features = {
    'decoder_input_tokens': inputs,
    'decoder_target_tokens': targets,
    'decoder_loss_weights': weights,
    'decoder_causal_attention': causal,
  }
  return {name: jnp.asarray(value) for name, value in features.items()}


def test_score_of_greedy_continuation_matches_generation_logits():
  params = _params()
  prefixes, lengths = _prefixes(4)
  steps = STEPS
  tokens, _, logits = decoding.generate(
    params,
    CONFIG,
    prefixes,
    lengths,
    max_decode_len=steps,
    prefix_lm=True,
    eos_id=NUM_EMBEDDINGS,
    vocab_limit=VOCAB,
    return_logits=True,
  )
  batch = _prefix_lm_batch(np.asarray(prefixes), np.asarray(lengths), np.asarray(tokens))
  total, count = decoding.score(params, CONFIG, batch)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  want = jnp.take_along_axis(log_probs, tokens[..., None], axis=-1)[..., 0].sum(axis=1)
  np.testing.assert_allclose(total, want, rtol=1e-4, atol=1e-3)
  np.testing.assert_array_equal(count, [steps] * 3)


def test_score_ranks_the_likelier_continuation_first():
  params = _params()
  prefixes, lengths = _prefixes(4)
  tokens = decoding.generate(
    params,
    CONFIG,
    prefixes,
    lengths,
    max_decode_len=STEPS,
    prefix_lm=True,
    eos_id=NUM_EMBEDDINGS,
    vocab_limit=VOCAB,
  ).tokens
  other = (np.asarray(tokens) + 7) % (VOCAB - 1) + 1
  greedy_score, _ = decoding.score(
    params, CONFIG, _prefix_lm_batch(np.asarray(prefixes), np.asarray(lengths), np.asarray(tokens))
  )
  other_score, _ = decoding.score(
    params, CONFIG, _prefix_lm_batch(np.asarray(prefixes), np.asarray(lengths), other)
  )
  # Greedy picks the argmax at each step, so its first token alone already beats any other token.
  assert np.all(np.asarray(greedy_score) > np.asarray(other_score))


def test_rejects_decoding_past_max_len():
  params = _params()
  prefixes, lengths = _prefixes(0)
  with pytest.raises(ValueError, match='max_len'):
    decoding.generate(
      params,
      CONFIG,
      prefixes,
      lengths,
      max_decode_len=CONFIG.max_len,
      prefix_lm=False,
      eos_id=1,
      vocab_limit=VOCAB,
    )


@pytest.mark.parametrize('config', [CONFIG, GEMMA3_CONFIG], ids=['gpt2', 'gemma3'])
def test_scanned_layers_decode_like_unrolled_ones(config):
  params, scanned = _scanned(config)
  scanned = dataclasses.replace(scanned, remat_policy='full')
  prefixes, lengths = _prefixes(4)
  kwargs = dict(
    max_decode_len=STEPS,
    prefix_lm=True,
    eos_id=NUM_EMBEDDINGS,
    vocab_limit=VOCAB,
    return_logits=True,
  )
  tokens, _, logits = decoding.generate(params, scanned, prefixes, lengths, **kwargs)
  want_tokens, _, want_logits = decoding.generate(
    _params(config), config, prefixes, lengths, **kwargs
  )
  np.testing.assert_array_equal(tokens, want_tokens)
  np.testing.assert_allclose(logits, want_logits, atol=1e-3, rtol=1e-4)


def _scanned(config):
  """`config` with scanned layers, and `_params(config)` stacked to match."""
  params = nn.meta.unbox(_params(config))
  layers = [params.pop(f'layers_{i}') for i in range(config.num_layers)]
  params['layers'] = jax.tree.map(lambda *xs: jnp.stack(xs), *layers)
  return params, dataclasses.replace(config, scan_layers=True)


def _whole_rows(prefixes, lengths, continuations, owners, prefix_lm, causal_pause_id):
  """`decoding.score`'s batch of each candidate's whole row: BOS + prefix + candidate."""
  width = CONFIG.max_len
  batch = {k: np.zeros((len(owners), width), np.int32) for k in ('inputs', 'targets', 'causal')}
  weights = np.zeros((len(owners), width), np.float32)
  for r, (candidate, owner) in enumerate(zip(continuations, owners)):
    prefix = list(np.asarray(prefixes)[owner, : int(lengths[owner])])
    tokens = prefix + list(candidate)
    batch['targets'][r, : len(tokens)] = tokens
    batch['inputs'][r, 1 : len(tokens)] = tokens[:-1]
    batch['causal'][r, : len(prefix) + 1] = 1
    if causal_pause_id is not None:
      batch['causal'][r] *= batch['inputs'][r] != causal_pause_id
    weights[r, len(prefix) : len(tokens)] = 1.0
  features = {
    'decoder_input_tokens': batch['inputs'],
    'decoder_target_tokens': batch['targets'],
    'decoder_loss_weights': weights,
  }
  if prefix_lm:
    features['decoder_causal_attention'] = batch['causal']
  return features


@pytest.mark.parametrize(
  'family, prefix_lm, causal_pauses',
  [('gpt2', True, False), ('gemma3', True, True), ('llama_scanned', False, False)],
)
def test_scoring_after_a_shared_prefix_equals_scoring_whole_rows(family, prefix_lm, causal_pauses):
  """Multiple-choice candidates scored after one prefill of their prefix get the whole rows'
  log-likelihoods (GPT-2's learned positions; Gemma 3's window of 3, much shorter than the
  rows, and a delay-robust model's pauses outside the block; scanned Llama layers, causal)."""
  config = {'gpt2': CONFIG, 'gemma3': GEMMA3_CONFIG, 'llama': LLAMA_CONFIG}[
    family.removesuffix('_scanned')
  ]
  params = _params(config)
  if family.endswith('_scanned'):
    params, config = _scanned(config)
  prefixes, lengths = _prefixes(4)  # three prefixes of 11, 7 and 15 tokens
  rng = np.random.default_rng(2)
  # Two, three and one candidates of 1 to 6 tokens, in mixed order; a last padding row.
  owners = [0, 1, 0, 2, 1, 1]
  continuations = [list(rng.integers(1, VOCAB, n)) for n in (1, 6, 3, 5, 2, 4)]
  causal_pause_id = PAUSE if causal_pauses else None

  def whole_rows():
    batch = _whole_rows(prefixes, lengths, continuations, owners, prefix_lm, causal_pause_id)
    causal = batch.get('decoder_causal_attention')
    return batch, np.asarray(_forward(params, batch['decoder_input_tokens'], causal, config))

  # The one-token candidate is made the greedy choice after its prefix.
  batch, logits = whole_rows()
  continuations[0] = [int(np.argmax(logits[0, int(lengths[0]), :VOCAB]))]
  batch, logits = whole_rows()
  padded = np.zeros((len(owners) + 1, 8), np.int32)  # a last padding row
  for r, candidate in enumerate(continuations):
    padded[r, : len(candidate)] = candidate
  sums, greedy = decoding.score_after_prefix(
    params,
    config,
    prefixes,
    lengths,
    jnp.asarray(padded),
    jnp.asarray([len(c) for c in continuations] + [0], np.int32),
    jnp.asarray(owners + [0], np.int32),
    prefix_lm=prefix_lm,
    vocab_limit=VOCAB,
    causal_pause_id=causal_pause_id,
  )
  want, _ = decoding.score(params, config, batch)
  np.testing.assert_allclose(np.asarray(sums)[:-1], want, rtol=2e-5, atol=1e-4)
  weighted = batch['decoder_loss_weights'] > 0
  is_argmax = np.argmax(logits[..., :VOCAB], axis=-1) == batch['decoder_target_tokens']
  want_greedy = np.all(is_argmax | ~weighted, axis=1)
  assert want_greedy[0]
  np.testing.assert_array_equal(np.asarray(greedy)[:-1], want_greedy)
  assert float(sums[-1]) == 0.0 and bool(greedy[-1])  # the padding row scores nothing
