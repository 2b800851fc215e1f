"""SeqIO preprocessors that put `<pause>` where the paper puts it.

Both take the pause id from the feature's `PauseVocabulary`, so a task cannot inject an id its
model has no row for. Randomness comes from seqio's per-example seeds (`map_over_dataset`), so
a dataset built with the same seed is the same, on every host.
"""

import functools

from absl import logging
import numpy as np
import seqio
import tensorflow as tf

from pause_lm.data import stateless_random
from pause_lm.data import variants
from pause_lm.data import vocab as vocab_lib

KEEPS = ('end', 'start')
# Number of prefix tokens cut to make room for the pauses (0 when nothing was cut).
TRUNCATED_KEY = 'inputs_pause_truncated'


def _pause_id(output_features, key: str) -> int:
  vocabulary = output_features[key].vocabulary
  if not isinstance(vocabulary, vocab_lib.PauseVocabulary):
    raise ValueError(
      f'Feature {key!r} uses {type(vocabulary).__name__}, which has no <pause> id. Wrap it: '
      f'seqio.Feature(pause_lm.data.vocab.PauseVocabulary(base_vocabulary)).'
    )
  return vocabulary.pause_id


def pause_gaps(length: tf.Tensor, seed: tf.Tensor, rate: float) -> tf.Tensor:
  """The gap of each of round(rate * L) pauses, uniform over the L + 1 gaps, independently.

  Gap g means "before token g" (gap L: after the last token); several pauses may share a gap.
  Rounding is half-to-even, as Python's `round`.
  """
  num_pauses = tf.cast(tf.round(rate * tf.cast(length, tf.float64)), tf.int32)
  return tf.random.stateless_uniform(
    [num_pauses], seed=seed, minval=0, maxval=length + 1, dtype=tf.int32
  )


def insert_pauses(tokens: tf.Tensor, seed: tf.Tensor, pause_id: int, rate: float) -> tf.Tensor:
  """Algorithm 1 on one 1-D sequence: pauses into the gaps of `pause_gaps`, trimmed to L."""
  length = tf.size(tokens)
  gaps = pause_gaps(length, seed, rate)
  pauses_per_gap = tf.math.bincount(
    gaps, minlength=length + 1, maxlength=length + 1, dtype=tf.int32
  )
  # Token i moves right by the number of pauses in gaps 0..i (those placed before it).
  new_positions = tf.range(length) + tf.cumsum(pauses_per_gap)[:length]
  injected = tf.fill([length + tf.size(gaps)], tf.constant(pause_id, tokens.dtype))
  injected = tf.tensor_scatter_nd_update(injected, new_positions[:, None], tokens)
  return injected[:length]


def insert_pauses_batch(
  tokens: np.ndarray, lengths: np.ndarray, seeds: np.ndarray, pause_id: int, rate: float
) -> np.ndarray:
  """`insert_pauses` on every row of a batch at once: the same output, row for row.

  Row b draws its gaps from `seeds[b]` as `pause_gaps` does (a stateless int32 draw is the
  uint32 stream modulo the range). Pause p of the row's sorted gaps lands at gap_p + p; the
  tokens fill the other positions in order (past lengths[b], the padding does). All rows at
  once in NumPy, because a TF op per chunk cost more than the whole injection
  (benchmarks/data_pipeline.py).

  Args:
    tokens: int [batch, width], row b's chunk in its first lengths[b] positions.
    lengths: int [batch].
    seeds: int64 [batch, 2], one seqio seed per row.
    pause_id: the id to insert.
    rate: pauses per token before trimming.

  Returns:
    [batch, width] like `tokens`; what lies past lengths[b] is to be ignored.
  """
  batch, width = tokens.shape
  counts = np.round(rate * lengths.astype(np.float64)).astype(np.int32)  # half to even
  most = int(counts.max(initial=0))
  draws = stateless_random.uniform_uint32(seeds, most)
  gaps = (draws % (lengths.astype(np.uint32) + 1)[:, None]).astype(np.int32)
  rank = np.arange(most, dtype=np.int32)
  gaps = np.where(rank < counts[:, None], gaps, width)  # unused draws land past the row
  # One flat scatter marks every pause slot; rows are width + most + 1 apart.
  stride = width + most + 1
  slots = np.sort(gaps, axis=1) + rank + (np.arange(batch, dtype=np.int32) * stride)[:, None]
  is_pause = np.zeros(batch * stride, bool)
  is_pause[slots.ravel()] = True
  is_pause = is_pause.reshape(batch, stride)[:, :width]
  # Row-major boolean indexing pairs the k-th free slot of a row with its k-th kept token.
  kept = np.arange(width) < (width - is_pause.sum(axis=1))[:, None]
  injected = np.full_like(tokens, pause_id)
  injected[~is_pause] = tokens[kept]
  return injected


def _seqio_seed_dataset() -> tf.data.Dataset:
  """The per-example seeds `seqio.map_over_dataset(num_seeds=1)` would give the next map.

  Taken from seqio's own seed counter (`seqio.utils.map_seed_manager`), so a batched
  preprocessor draws exactly what the per-example one drew; tests pin the equality.
  """
  first = seqio.utils._NEXT_MAP_SEED  # pylint: disable=protected-access
  if first is None:
    pair = (None, None)
  else:
    pair = (first, first + 1)
    seqio.utils._NEXT_MAP_SEED = first + 2  # pylint: disable=protected-access
  return tf.data.Dataset.zip(tuple(tf.data.Dataset.random(seed=s) for s in pair))


# Tokens per batched injection: 512 chunks of 256, 64 of 2048. Smaller batches cost more per
# chunk at short lengths (8.4% of the pipeline's throughput at 128 chunks of 256, against
# 3.0-5.3% at 512, when each chunk still took two maps; benchmarks/data_pipeline.py, 2 cores).
INJECT_TOKENS = 2**17
# No token id is negative, so -1 marks a padded batch's padding and gives each chunk's length
# without a per-chunk map (a tf.data map costs ~40 us of CPU per element on 2 cores, more than
# the injection itself).
_PADDING = -1
_LENGTH_KEY = '_pause_lm_chunk_length'  # carried from the batch to the trim, then dropped


def _padding_values(element_spec, feature_key: str):
  """padded_batch's padding per feature: _PADDING for the chunks, the usual zeros elsewhere."""
  return {
    key: tf.constant(_PADDING, spec.dtype) if key == feature_key else tf.zeros([], spec.dtype)
    for key, spec in element_spec.items()
  }


def _inject_padded(
  chunks: np.ndarray, seeds: np.ndarray, pause_id: int, rate: float
) -> tuple[np.ndarray, np.ndarray]:
  """`insert_pauses_batch` on a batch padded with _PADDING; also returns the chunk lengths."""
  lengths = np.count_nonzero(chunks != _PADDING, axis=1).astype(np.int32)
  return insert_pauses_batch(chunks, lengths, seeds, pause_id, rate), lengths


def inject_pauses(
  dataset: tf.data.Dataset,
  output_features,
  rate: float = 0.1,
  feature_key: str = 'targets',
  sequence_length=None,
) -> tf.data.Dataset:
  """Pause-pretraining (Section 3.1): pauses at uniformly random positions of each chunk.

  Apply after the text is cut into chunks of the sequence length, so that every chunk of
  length L gets round(rate * L) pauses (205 for L = 2048 at the paper's 10%). Each chunk gets
  its own seqio seed and exactly `insert_pauses`'s output for it; the work is done on batches
  of chunks (`insert_pauses_batch`), since a tf.data map per chunk cost a third (at 2048
  tokens) to a half (at 256) of the pipeline's throughput. The only per-chunk step left is
  the trim of chunks of unknown length back to their own length.
  """
  if not 0.0 <= rate < 1.0:
    raise ValueError(f'Pause rate must be in [0, 1), got {rate}.')
  pause_id = _pause_id(output_features, feature_key)

  static_shape = dataset.element_spec[feature_key].shape
  chunk_length = (sequence_length or {}).get(feature_key) or static_shape[0] or 2048
  batch_size = max(1, INJECT_TOKENS // chunk_length)
  # Chunks of one static length need no trim: the batch is never padded.
  needs_trim = not static_shape.is_fully_defined()

  def inject(features, seeds):
    features = dict(features)
    chunks = features[feature_key]
    seeds = tf.stack(seeds, axis=1)[: tf.shape(chunks)[0]]  # the last batch may be short
    injected, lengths = tf.numpy_function(
      lambda t, s: _inject_padded(t, s, pause_id, rate),
      [chunks, seeds],
      (chunks.dtype, tf.int32),
      stateful=False,
    )
    features[feature_key] = tf.ensure_shape(injected, chunks.shape)
    if needs_trim:
      features[_LENGTH_KEY] = tf.ensure_shape(lengths, [None])
    return features

  def trim(features):
    features = dict(features)
    length = features.pop(_LENGTH_KEY)
    features[feature_key] = tf.ensure_shape(features[feature_key][:length], static_shape)
    return features

  # Padded, not ragged, batches: unbatching ragged ones cost as much as the old per-chunk map.
  padding = _padding_values(dataset.element_spec, feature_key)
  batches = tf.data.Dataset.zip(
    (
      dataset.padded_batch(batch_size, padding_values=padding),
      _seqio_seed_dataset().batch(batch_size),
    )
  )
  injected = batches.map(inject, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
  # A serial map: the trim is a slice, cheaper than handing chunks between threads.
  return injected.map(trim) if needs_trim else injected


def _delay_token(output_features, key: str, filler) -> int:
  """The token that delays the answer: <pause>, or an ordinary token (Lanham et al.)."""
  if filler is None:
    return _pause_id(output_features, key)
  if isinstance(filler, int):
    return filler
  ids = list(output_features[key].vocabulary.encode(filler))
  if len(ids) != 1:
    raise ValueError(
      f'Filler {filler!r} encodes to {len(ids)} tokens {ids}; a filler must be '
      'one token. Pass its token id instead (filler=<int>).'
    )
  return ids[0]


def num_pauses_of(
  seed: tf.Tensor, num_pauses: int, max_pauses: int, half_at_largest: bool = False
) -> tf.Tensor:
  """The M of one example, from its seed: uniform over num_pauses..max_pauses (inclusive), or
  with `half_at_largest` max_pauses for half of the examples and uniform for the other half.

  Half at the largest is what delay-robust finetuning draws (appended pauses, issue 26): its
  rows teach the first answer token after every number of pauses up to the example's M
  (`feature_converters.teach_answer_at_every_delay`), so an example with M = max_pauses
  teaches every delay of the range at once, while under a uniform M the largest delay was
  taught by 1 example in (max - min + 1). The uniform half teaches the rest of the answer
  after every delay. One draw either way: u uniform over 2 x the range, M = num_pauses + u
  while u is in the range, else max_pauses.
  """
  size = max_pauses - num_pauses + 1
  if not half_at_largest:
    return tf.random.stateless_uniform(
      [], seed=seed, minval=num_pauses, maxval=max_pauses + 1, dtype=tf.int32
    )
  u = tf.random.stateless_uniform([], seed=seed, minval=0, maxval=2 * size, dtype=tf.int32)
  return tf.where(u < size, num_pauses + u, tf.constant(max_pauses, tf.int32))


def append_pauses(
  dataset: tf.data.Dataset,
  sequence_length,
  output_features,
  variant: variants.Variant,
  filler: str | int | None = None,
  keep: str = 'end',
  feature_key: str = 'inputs',
) -> tf.data.Dataset:
  """Pause-finetuning / pause-inference (Section 3.1): M delay tokens around the prefix.

  Apply after tokenization. `variant` says how many delay tokens go where (a `Variant`
  checks its counts and placement when it is made, so they are not checked again here);
  a 'filler' variant's token is `filler` (one token's text, or its id), `<pause>` otherwise.
  When prefix + M exceeds the feature's length, the *prefix* is cut (its end is kept by
  default: the question usually sits there), never the pauses, and `inputs_pause_truncated`
  records how many tokens were cut.

  With a random M (`variant.max_pauses`), each example gets its own M from
  num_pauses..max_pauses (inclusive) with seqio's per-example seeds, so the draw is the same
  for the same dataset seed, on every host: for appended pauses max_pauses for half of the
  examples and uniform for the rest (`num_pauses_of`: delay-robust finetuning), uniform for
  prepended pauses and fillers. Trained on, this teaches one model every delay in
  the range, so that inference at a fixed M_inf below the largest does not meet an unseen
  input shape (the zero-pause collapse of Section 5.2). The prefix is cut to make room for the
  M drawn, not for max_pauses: an example with M = m is exactly the fixed-M variant's example
  at m.
  """
  if (variant.kind == 'filler') != (filler is not None):
    raise ValueError(
      f'A filler variant needs its filler token and only a filler variant takes one; got '
      f'{variant} with filler={filler!r}.'
    )
  if keep not in KEEPS:
    raise ValueError(f'keep must be one of {KEEPS}, got {keep!r}.')
  num_pauses, max_pauses, placement = variant.num_pauses, variant.max_pauses, variant.placement
  largest = variant.largest
  max_length = (sequence_length or {}).get(feature_key)
  if max_length is not None and largest >= max_length:
    raise ValueError(
      f'{largest} pauses leave no room for the prefix in {feature_key!r} of length '
      f'{max_length}; raise the {feature_key!r} sequence length or lower num_pauses.'
    )
  token = tf.constant(_delay_token(output_features, feature_key, filler), tf.int32)

  def add(features, count):
    features = dict(features)
    prefix = tf.cast(features[feature_key], tf.int32)
    cut = tf.zeros([], tf.int32)
    if max_length is not None:
      cut = tf.maximum(tf.size(prefix) - (max_length - count), 0)
      prefix = prefix[cut:] if keep == 'end' else prefix[: tf.size(prefix) - cut]
    delay = tf.fill([count], token)
    parts = [prefix, delay] if placement == 'append' else [delay, prefix]
    features[feature_key] = tf.concat(parts, axis=0)
    features[TRUNCATED_KEY] = cut
    return features

  count = (
    f'{num_pauses}'
    if max_pauses is None
    else f'from {num_pauses} to {max_pauses} per example ('
    + (
      'half at the largest, half uniform'
      if variant.kind == 'pause' and placement == 'append'
      else 'uniform'
    )
    + ')'
  )
  logging.info(
    'Adding %s %s tokens (%s) to %r; prefixes longer than %s tokens minus the '
    'pauses are cut at the %s.',
    count,
    '<pause>' if filler is None else repr(filler),
    placement,
    feature_key,
    max_length,
    'start' if keep == 'end' else 'end',
  )
  if max_pauses is None:
    return dataset.map(
      lambda features: add(features, tf.constant(num_pauses, tf.int32)),
      num_parallel_calls=tf.data.AUTOTUNE,
    )

  # Delay-robust finetuning (appended pauses: issue 26) draws half of the examples at max.
  half_at_largest = variant.kind == 'pause' and placement == 'append'

  @seqio.map_over_dataset(num_seeds=1)
  def add_random(features, seed):
    return add(features, num_pauses_of(seed, num_pauses, max_pauses, half_at_largest))

  return add_random(dataset)


def rekey_text(dataset: tf.data.Dataset, key: str = 'text') -> tf.data.Dataset:
  """Pretraining sources hold raw text under `key`; LM tasks want it as `targets`."""
  return dataset.map(lambda ex: {'targets': ex[key]}, num_parallel_calls=tf.data.AUTOTUNE)


def with_args(preprocessor, **kwargs):
  """functools.partial that keeps the name, so `show` and logs say which preprocessor ran."""
  partial = functools.partial(preprocessor, **kwargs)
  functools.update_wrapper(partial, preprocessor)
  return partial
