"""Algorithm 1 (pause injection) and Algorithms 2/3 (appended pauses), checked exactly."""

import collections

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest
import scipy.stats
import seqio
import tensorflow as tf

from pause_lm.data import preprocessors
from pause_lm.data import variants
from pause_lm.data import vocab as vocab_lib

BASE = seqio.ByteVocabulary()
VOCAB = vocab_lib.PauseVocabulary(BASE)
PAUSE = VOCAB.pause_id
FEATURES = {
  'inputs': seqio.Feature(VOCAB, add_eos=False),
  'targets': seqio.Feature(VOCAB, add_eos=True),
}


def _reference(tokens, gaps, pause_id):
  """Algorithm 1 written the slow, obvious way: walk the gaps, then trim."""
  per_gap = collections.Counter(int(g) for g in gaps)
  out = []
  for i in range(len(tokens) + 1):
    out.extend([pause_id] * per_gap[i])
    if i < len(tokens):
      out.append(tokens[i])
  return out[: len(tokens)]


@settings(max_examples=150, deadline=None)
@given(
  length=st.integers(1, 400),
  rate=st.floats(0.0, 0.5),
  seed=st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1)),
)
def test_insert_pauses_properties(length, rate, seed):
  tokens = np.arange(1000, 1000 + length, dtype=np.int32)  # distinct, never the pause id
  gaps = preprocessors.pause_gaps(tf.constant(length), tf.constant(seed), rate).numpy()
  out = preprocessors.insert_pauses(tf.constant(tokens), tf.constant(seed), PAUSE, rate).numpy()

  assert len(gaps) == round(rate * length)  # k pauses before the trim
  assert ((0 <= gaps) & (gaps <= length)).all()  # one of the L + 1 gaps each
  assert len(out) == length  # trimmed back to L
  kept = int((out == PAUSE).sum())
  assert kept <= len(gaps)
  np.testing.assert_array_equal(out[out != PAUSE], tokens[: length - kept])  # order, prefix
  assert out.tolist() == _reference(tokens.tolist(), gaps, PAUSE)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 2))
def test_insert_pauses_deterministic_per_seed_and_varies_across_seeds(seed):
  tokens = tf.range(1, 2049)
  run = lambda s: preprocessors.insert_pauses(tokens, tf.constant([s, 7]), PAUSE, 0.1).numpy()
  np.testing.assert_array_equal(run(seed), run(seed))
  assert (run(seed) != run(seed + 1)).any()


def test_insert_pauses_exact_positions_for_fixed_seeds():
  # Pins the output for given seeds: any rewrite for speed must keep every position.
  out = preprocessors.insert_pauses(tf.range(1, 21), tf.constant([3, 4], tf.int64), 99, 0.2)
  assert out.numpy().tolist() == [
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
    12,
    99,
    13,
    14,
    15,
    99,
    16,
    99,
    17,
  ]
  out = preprocessors.insert_pauses(tf.range(1, 31), tf.constant([123, 7], tf.int64), 99, 0.1)
  assert out.numpy().tolist() == [
    1,
    2,
    3,
    99,
    4,
    5,
    6,
    7,
    8,
    99,
    9,
    10,
    11,
    12,
    13,
    14,
    15,
    16,
    17,
    18,
    19,
    20,
    21,
    22,
    23,
    24,
    99,
    25,
    26,
    27,
  ]


def test_paper_setting_inserts_205_pauses_in_2048():
  gaps = preprocessors.pause_gaps(tf.constant(2048), tf.constant([1, 2]), 0.1)
  assert gaps.shape == (205,)


def test_gaps_are_uniform_over_all_l_plus_one_gaps():
  length, draws = 20, 4000
  counts = np.zeros(length + 1)
  for s in range(draws // 4):
    gaps = preprocessors.pause_gaps(tf.constant(length), tf.constant([s, 0]), 0.2).numpy()
    np.add.at(counts, gaps, 1)
  assert counts.sum() == draws
  assert counts[0] > 0 and counts[length] > 0  # both ends reachable
  p_value = scipy.stats.chisquare(counts).pvalue
  assert p_value > 0.001, (p_value, counts)


def test_inject_pauses_uses_seqio_seeds():
  ds = tf.data.Dataset.from_tensor_slices(
    {'targets': tf.reshape(tf.range(1, 1 + 8 * 100), [8, 100])}
  )

  def run(seed):
    with seqio.utils.map_seed_manager(seed):
      out = preprocessors.inject_pauses(ds, FEATURES, rate=0.1)
    return np.stack([ex['targets'] for ex in out.as_numpy_iterator()])

  a, b, c = run(1), run(1), run(2)
  np.testing.assert_array_equal(a, b)
  assert (a != c).any()
  assert ((a == PAUSE).sum(axis=1) <= 10).all() and (a == PAUSE).sum() > 40
  # Different examples get different positions.
  assert len({tuple(np.flatnonzero(row == PAUSE)) for row in a}) == len(a)


def _per_example_reference(ds, rate, map_seed):
  """The first implementation: one seqio-seeded map of insert_pauses per chunk."""
  with seqio.utils.map_seed_manager(map_seed):

    @seqio.map_over_dataset(num_seeds=1)
    def inject(features, seed):
      return {
        **features,
        'targets': preprocessors.insert_pauses(features['targets'], seed, PAUSE, rate),
      }

    return [ex['targets'] for ex in inject(ds).as_numpy_iterator()]


@pytest.mark.parametrize('rate', [0.1, 0.0, 0.33])
@pytest.mark.parametrize('map_seed', [1, 17])
def test_batched_injection_equals_the_per_example_one(rate, map_seed):
  # Chunks of every length (a document group's last chunk is short), more of them than one
  # injection batch: every position, of every chunk, for the same seqio seed.
  rng = np.random.default_rng(map_seed)
  lengths = [*rng.integers(1, 300, preprocessors.INJECT_TOKENS // 2048 + 40), 2048, 2048, 1, 2, 3]
  rows = [rng.integers(1, 200, n).astype(np.int32) for n in lengths]
  ds = tf.data.Dataset.from_generator(
    lambda: ({'targets': r} for r in rows),
    output_signature={'targets': tf.TensorSpec([None], tf.int32)},
  )
  expected = _per_example_reference(ds, rate, map_seed)
  with seqio.utils.map_seed_manager(map_seed):
    got = [
      ex['targets']
      for ex in preprocessors.inject_pauses(ds, FEATURES, rate=rate).as_numpy_iterator()
    ]
  assert len(got) == len(rows)
  for want, have in zip(expected, got):
    np.testing.assert_array_equal(have, want)


def test_batched_injection_keeps_a_static_chunk_shape():
  ds = tf.data.Dataset.from_tensor_slices({'targets': tf.reshape(tf.range(1, 1 + 5 * 64), [5, 64])})
  out = preprocessors.inject_pauses(ds, FEATURES, rate=0.1)
  assert out.element_spec['targets'].shape == [64]
  expected = _per_example_reference(ds, 0.1, 3)
  with seqio.utils.map_seed_manager(3):
    got = [
      ex['targets']
      for ex in preprocessors.inject_pauses(ds, FEATURES, rate=0.1).as_numpy_iterator()
    ]
  np.testing.assert_array_equal(np.stack(got), np.stack(expected))


def test_inject_pauses_needs_a_pause_vocabulary():
  with pytest.raises(ValueError, match='PauseVocabulary'):
    preprocessors.inject_pauses(
      tf.data.Dataset.from_tensors({'targets': [1]}), {'targets': seqio.Feature(BASE)}
    )


def _append(prefix, m, length=None, placement='append', filler=None, **kwargs):
  ds = tf.data.Dataset.from_tensors(
    {'inputs': tf.constant(prefix, tf.int32), 'targets': tf.constant([7, 7], tf.int32)}
  )
  lengths = None if length is None else {'inputs': length, 'targets': 4}
  variant = variants.Variant.make(m, placement, filler)
  out = preprocessors.append_pauses(ds, lengths, FEATURES, variant, filler, **kwargs)
  ex = next(out.as_numpy_iterator())
  return ex['inputs'].tolist(), int(ex[preprocessors.TRUNCATED_KEY])


def test_append_and_prepend():
  assert _append([5, 6, 7], 3) == ([5, 6, 7, PAUSE, PAUSE, PAUSE], 0)
  assert _append([5, 6, 7], 2, placement='prepend') == ([PAUSE, PAUSE, 5, 6, 7], 0)
  assert _append([5, 6, 7], 0) == ([5, 6, 7], 0)


def test_filler_uses_an_ordinary_token():
  dot = BASE.encode('.')[0]
  assert _append([5, 6], 3, filler='.') == ([5, 6, dot, dot, dot], 0)
  assert _append([5, 6], 2, filler=42) == ([5, 6, 42, 42], 0)
  with pytest.raises(ValueError, match='one token'):
    _append([5, 6], 2, filler='..')


def test_a_filler_token_goes_with_a_filler_variant_only():
  ds = tf.data.Dataset.from_tensors({'inputs': tf.constant([5, 6], tf.int32)})
  for variant, filler in ((variants.Variant('filler', 2), None), (variants.Variant('pause', 2), 0)):
    with pytest.raises(ValueError, match='filler variant needs its filler token'):
      preprocessors.append_pauses(ds, None, FEATURES, variant, filler)


def test_truncation_cuts_the_prefix_never_the_pauses():
  prefix = list(range(10, 20))
  inputs, cut = _append(prefix, 4, length=8)
  assert inputs == [16, 17, 18, 19] + [PAUSE] * 4 and cut == 6
  inputs, cut = _append(prefix, 4, length=8, keep='start')
  assert inputs == [10, 11, 12, 13] + [PAUSE] * 4 and cut == 6
  inputs, cut = _append(prefix, 4, length=8, placement='prepend')
  assert inputs == [PAUSE] * 4 + [16, 17, 18, 19] and cut == 6
  assert _append(prefix, 4, length=14) == (prefix + [PAUSE] * 4, 0)


def test_too_many_pauses_for_the_length_is_an_error():
  with pytest.raises(ValueError, match='no room for the prefix'):
    _append([5], 8, length=8)


def _random_m(prefixes, lo, hi, seed, length=None, placement='append', filler=None):
  """Appends lo..hi pauses per example under seqio seed `seed`; (inputs, cut) per example."""
  ds = tf.data.Dataset.from_tensor_slices(tf.ragged.constant(prefixes, tf.int32)).map(
    lambda p: {'inputs': p, 'targets': tf.constant([7, 7], tf.int32)}
  )
  lengths = None if length is None else {'inputs': length, 'targets': 4}
  variant = variants.Variant.make(lo, placement, filler, max_pauses=hi)
  with seqio.utils.map_seed_manager(seed):
    out = preprocessors.append_pauses(ds, lengths, FEATURES, variant, filler)
  return [
    (ex['inputs'].tolist(), int(ex[preprocessors.TRUNCATED_KEY])) for ex in out.as_numpy_iterator()
  ]


@pytest.mark.parametrize('placement', ['append', 'prepend'])
def test_random_m_draws_lo_to_hi_inclusive(placement):
  """Prepended pauses: M uniform over lo..hi. Appended pauses (delay-robust finetuning, issue
  26): M = hi for half of the examples, uniform over lo..hi for the other half."""
  lo, hi, n = 2, 9, 4000
  out = _random_m([[5, 6, 7]] * n, lo, hi, seed=3, placement=placement)
  counts = collections.Counter(inputs.count(PAUSE) for inputs, _ in out)
  assert sorted(counts) == list(range(lo, hi + 1))  # Both ends are drawn, nothing outside.
  # Chi-square against the expected shares (fixed seed: deterministic, not flaky); an
  # off-by-one range (hi never drawn, or lo - 1 drawn) fails the check above.
  size = hi - lo + 1
  shares = [1 / size] * size if placement == 'prepend' else [0.5 / size] * size
  if placement == 'append':
    shares[-1] += 0.5
  observed = [counts[m] for m in range(lo, hi + 1)]
  expected = [n * share for share in shares]
  assert scipy.stats.chisquare(observed, expected).pvalue > 1e-3
  assert all(abs(c - e) < 5 * e**0.5 for c, e in zip(observed, expected))
  # The pauses stay on their side of the untouched prefix.
  for inputs, _ in out:
    prefix = inputs[:3] if placement == 'append' else inputs[len(inputs) - 3 :]
    assert prefix == [5, 6, 7] and inputs.count(PAUSE) == len(inputs) - 3


def test_random_m_is_deterministic_per_seed_and_per_example():
  prefixes = [[5, 6, 7]] * 200
  a, b, c = (_random_m(prefixes, 0, 10, seed) for seed in (1, 1, 2))
  assert a == b and a != c
  # Examples draw independently: not one M for the whole dataset.
  assert len({inputs.count(PAUSE) for inputs, _ in a}) == 11


@pytest.mark.parametrize('placement', ['append', 'prepend'])
def test_random_m_example_is_the_fixed_m_example_of_its_draw(placement):
  # Prefixes of 3-10 tokens in 12 slots, M from 0..8: the cut makes room for the M drawn.
  prefixes = [list(range(10, 10 + k)) for k in range(3, 11)] * 25
  out = _random_m(prefixes, 0, 8, seed=5, length=12, placement=placement)
  cuts = 0
  fixed = {}  # (prefix, M) -> the fixed-M example: 8 prefixes x 9 Ms, not 200 pipelines
  for prefix, (inputs, cut) in zip(prefixes, out):
    m = inputs.count(PAUSE)
    key = (tuple(prefix), m)
    if key not in fixed:
      fixed[key] = _append(prefix, m, length=12, placement=placement)
    assert (inputs, cut) == fixed[key]
    cuts += cut > 0
  assert 0 < cuts < len(prefixes)  # Some long prefixes met a large M, some did not.


def test_random_m_with_filler_and_bad_ranges():
  dot = BASE.encode('.')[0]
  for inputs, _ in _random_m([[5, 6]] * 20, 1, 3, seed=1, filler='.'):
    assert inputs[:2] == [5, 6] and 1 <= len(inputs) - 2 <= 3 and set(inputs[2:]) == {dot}
  with pytest.raises(ValueError, match='lo < hi'):  # The Variant refuses it.
    _random_m([[5]], 4, 4, seed=1)
  with pytest.raises(ValueError, match='no room for the prefix'):
    _random_m([[5]], 0, 8, seed=1, length=8)


def test_batched_injection_passes_other_features_through():
  # The padded batch pads every feature; only the chunks are trimmed back, others come out as
  # they went in (strings and numbers alike).
  rows = [np.arange(1, 1 + n, dtype=np.int32) for n in (30, 7, 30, 1)]
  ds = tf.data.Dataset.from_generator(
    lambda: ({'targets': r, 'id': f'doc{i}', 'count': np.int64(i)} for i, r in enumerate(rows)),
    output_signature={
      'targets': tf.TensorSpec([None], tf.int32),
      'id': tf.TensorSpec([], tf.string),
      'count': tf.TensorSpec([], tf.int64),
    },
  )
  expected = _per_example_reference(ds, 0.2, 5)
  with seqio.utils.map_seed_manager(5):
    got = list(preprocessors.inject_pauses(ds, FEATURES, rate=0.2).as_numpy_iterator())
  assert [ex['id'] for ex in got] == [b'doc0', b'doc1', b'doc2', b'doc3']
  assert [ex['count'] for ex in got] == [0, 1, 2, 3]
  assert sorted(got[0]) == ['count', 'id', 'targets']
  for want, have in zip(expected, got):
    np.testing.assert_array_equal(have['targets'], want)
