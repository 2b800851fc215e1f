"""seqio feature converters whose loss weights skip every `<pause>` target.

seqio's converters weight every non-padding target. Pause-pretraining must not ask the model to
predict pauses (Section 3.1: the loss skips positions whose *next* token is a pause), while a
position whose *input* is a pause still learns to predict the next real token: that is what
pause-inference relies on. So only the target side is masked.

seqio also takes token id 0 for padding (no loss, not attended as a prefix). That holds for
SentencePiece models, whose id 0 is `<pad>`, but GPT-2's and Qwen's tokenizers give id 0 to
`!`. So the converters shift every token id up by one around seqio's conversion and back after
it: weights and masks come out of where the tokens are, never out of their ids, and the model
features hold the tokenizer's ids (and the start token, 0 unless `bos_id` says otherwise).
"""

import seqio
import tensorflow as tf


class _PauseMaskMixin:
  """Zeroes `decoder_loss_weights` wherever `decoder_target_tokens` is the pause id."""

  def __init__(self, *args, pause_id: int, **kwargs):
    self._pause_id = pause_id
    super().__init__(*args, **kwargs)

  @property
  def pause_id(self) -> int:
    return self._pause_id

  @property
  def bos_id(self) -> int:
    """The start token as seqio inserts it: in shifted ids, so it comes back as given."""
    return super().bos_id + 1

  def _convert_features(self, ds, task_feature_lengths):
    def shift_up(features):
      return {k: v + 1 if k in ('inputs', 'targets') else v for k, v in features.items()}

    return super()._convert_features(
      ds.map(shift_up, num_parallel_calls=tf.data.AUTOTUNE), task_feature_lengths
    )

  def _convert_example(self, features):
    converted = dict(super()._convert_example(features))
    for key in ('decoder_target_tokens', 'decoder_input_tokens'):
      tokens = converted[key]  # Padding stays 0; tokens and the start token go back down.
      converted[key] = tf.where(tokens > 0, tokens - 1, tf.zeros_like(tokens))
    not_pause = tf.not_equal(converted['decoder_target_tokens'], self._pause_id)
    converted['decoder_loss_weights'] *= tf.cast(not_pause, converted['decoder_loss_weights'].dtype)
    return converted


class PauseLMFeatureConverter(_PauseMaskMixin, seqio.LMFeatureConverter):
  """Decoder-only LM features for (pause-)pretraining."""


def outside_the_prefix_block(features, pause_id: int):
  """Takes every pause out of the prefix-LM's bidirectional block: a pause attends only to
  what comes before it and is attended only by what comes after it. Appended pauses then see
  the whole prefix and the pauses before them, and no prefix token sees them: the prefix is
  read the same way whatever the number of pauses after it, and the output after k pauses is
  exactly what an example with M = k computes there.
  """
  features = dict(features)
  attention = features['decoder_causal_attention']
  not_pause = tf.not_equal(features['decoder_input_tokens'], pause_id)
  features['decoder_causal_attention'] = attention * tf.cast(not_pause, attention.dtype)
  return features


def teach_answer_at_every_delay(features, pause_id: int):
  """Makes the first answer token the target at every delay before it: delay 0 with weight 1,
  the M delays after it sharing the weight of one more token.

  In a converted prefix-LM row the targets of the last prefix token and of every pause but
  the last are the pauses after them, which the loss skips, so an example with M pauses
  teaches its answer after exactly M pauses. Here every position of a run of pause targets
  that ends where an answer starts (the first weighted target of its example) takes that
  answer's first token instead. With the pauses outside the bidirectional block
  (`outside_the_prefix_block`), the output at each of those positions is the one inference
  reads after that many pauses, so each example teaches its first token after 0, 1, ..., M
  pauses at once. Pauses elsewhere (prepended ones, whose run ends at the prefix's first
  token) keep their skipped targets, and the tokens after the first are taught as before
  (weight 1 each).

  The weight rule (float32 weights): the first of the M + 1 positions that teach the first
  token (delay 0: the last prefix token, the position StdFT teaches) weighs 1, and each of
  the M after it (delays 1..M: pause inputs) weighs 1 / M. At M = 0 the row is StdFT's; at
  M = 10 the first token weighs 1 + 10 x 0.1 = 2 in all. Why, measured in issue 26 (a
  `_pause0to10` task, M = 10 for half of the examples): with 1 / (M + 1) at every
  position (the delays sharing one token's weight) delay 0 got 0.09 at M = 10, and
  finetuning on issue 26's task stayed 8-14 points below StdFT at M_inf = 0 and 10; with
  weight 1 at every position (the first token up to 11 of an example's 12 weighted
  targets), or 1 / sqrt(M + 1) at every position, the pause positions carried most of the
  loss and on the toy grid most StdPT seeds learned only the most common answer. This rule:
  97.7 / 97.9 at M_inf = 0 / 10 on issue 26's task (StdFT 96.4; 3 seeds each), and no
  toy seed at the most common answer (docs/results/toy/delay_robust/).
  Works on packed rows: a run never crosses an example.
  """
  targets, weights = features['decoder_target_tokens'], features['decoder_loss_weights']
  length = tf.shape(targets)[0]
  is_pause = tf.equal(targets, pause_id)
  not_pause = tf.logical_not(is_pause)
  # Position i's next target that is not a pause: the (number of such before i)-th of them.
  real_positions = tf.concat([tf.cast(tf.where(not_pause)[:, 0], tf.int32), [length]], 0)
  before = tf.cumsum(tf.cast(not_pause, tf.int32), exclusive=True)
  next_real = tf.gather(real_positions, before)
  weighted = weights > 0
  previous_weighted = tf.concat([[False], weighted[:-1]], 0)
  if 'decoder_segment_ids' in features:
    segments = features['decoder_segment_ids']
    previous_weighted &= tf.equal(segments, tf.concat([[0], segments[:-1]], 0))
  answer_starts = tf.concat([weighted & ~previous_weighted, [False]], 0)
  delay = is_pause & tf.gather(answer_starts, next_real)
  answers = tf.gather(tf.concat([targets, [0]], 0), next_real)
  # Each answer start's number of teaching positions (M + 1). The first of them (delay 0, the
  # last prefix token) weighs 1; the M after it (delays 1..M, pause inputs) 1 / M each.
  teaching = delay | (answer_starts[:-1] & (next_real == tf.range(length)))
  owner = tf.where(teaching, next_real, length)  # the answer start each position teaches
  count = tf.math.unsorted_segment_sum(tf.cast(teaching, tf.float32), owner, length + 1)
  count = tf.gather(count, owner)
  at_zero = teaching & tf.logical_not(tf.concat([[False], teaching[:-1]], 0))
  share = tf.where(at_zero, 1.0, 1.0 / tf.maximum(count - 1.0, 1.0))
  weights = tf.cast(weights, tf.float32)
  features = dict(features)
  features['decoder_target_tokens'] = tf.where(delay, answers, targets)
  features['decoder_loss_weights'] = tf.where(teaching, share, weights)
  return features


class PausePrefixLMFeatureConverter(_PauseMaskMixin, seqio.PrefixLMFeatureConverter):
  """Prefix-LM features for finetuning: bidirectional over the prefix and its pauses.

  Delay-robust finetuning (random-M variants, `_pause{lo}to{hi}`; issue 26) changes two
  things, each a flag: `causal_pauses` takes the pauses out of the bidirectional block
  (`outside_the_prefix_block`; inference on such a model must do the same, as
  `decoding.generate(..., causal_pause_id=...)` does), and `answer_at_every_delay` teaches
  the first answer token after every number of pauses up to the example's
  (`teach_answer_at_every_delay`; training rows only, never rows that are scored).
  """

  def __init__(
    self, *args, causal_pauses: bool = False, answer_at_every_delay: bool = False, **kwargs
  ):
    self._causal_pauses = causal_pauses
    self._answer_at_every_delay = answer_at_every_delay
    if answer_at_every_delay:  # fractional weights (teach_answer_at_every_delay)
      self.MODEL_FEATURES = {
        **self.MODEL_FEATURES,
        'decoder_loss_weights': seqio.FeatureConverter.FeatureSpec(dtype=tf.float32),
      }
    super().__init__(*args, **kwargs)

  def _convert_example(self, features):
    converted = super()._convert_example(features)
    if self._causal_pauses:
      converted = outside_the_prefix_block(converted, self.pause_id)
    if self._answer_at_every_delay:
      converted = teach_answer_at_every_delay(converted, self.pause_id)
    return converted
