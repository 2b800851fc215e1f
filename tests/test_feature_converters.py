"""Loss weights are 0 exactly where the target is <pause> or padding, 1 elsewhere in targets."""

import numpy as np
import tensorflow as tf

from pause_lm.data import feature_converters

P = 99


def _convert(converter, examples, lengths):
  ds = tf.data.Dataset.from_generator(
    lambda: iter(examples),
    output_signature={k: tf.TensorSpec([None], tf.int32) for k in examples[0]},
  )
  return list(converter(ds, lengths).as_numpy_iterator())


def test_lm_weights_skip_pause_targets_and_padding():
  targets = [5, P, 6, P, P, 7, 1]
  (ex,) = _convert(
    feature_converters.PauseLMFeatureConverter(pause_id=P, pack=False),
    [{'targets': targets}],
    {'targets': 10},
  )
  np.testing.assert_array_equal(ex['decoder_target_tokens'], targets + [0, 0, 0])
  np.testing.assert_array_equal(ex['decoder_input_tokens'], [0] + targets + [0, 0])
  np.testing.assert_array_equal(ex['decoder_loss_weights'], [1, 0, 1, 0, 0, 1, 1, 0, 0, 0])
  # A position whose *input* is a pause still learns the next real token.
  inputs_pause = ex['decoder_input_tokens'] == P
  assert (ex['decoder_loss_weights'][inputs_pause & (ex['decoder_target_tokens'] != P)] == 1).all()


def test_lm_weights_with_packing():
  examples = [{'targets': [5, P, 6]}, {'targets': [P, 7]}]
  (ex,) = _convert(
    feature_converters.PauseLMFeatureConverter(pause_id=P, pack=True), examples, {'targets': 6}
  )
  np.testing.assert_array_equal(ex['decoder_target_tokens'], [5, P, 6, P, 7, 0])
  np.testing.assert_array_equal(ex['decoder_loss_weights'], [1, 0, 1, 0, 1, 0])
  np.testing.assert_array_equal(ex['decoder_segment_ids'], [1, 1, 1, 2, 2, 0])


def test_prefix_lm_weights_on_targets_only_and_pauses_bidirectional():
  example = {'inputs': [8, 9, P, P], 'targets': [3, 4, 1]}
  (ex,) = _convert(
    feature_converters.PausePrefixLMFeatureConverter(pause_id=P, pack=False),
    [example],
    {'inputs': 6, 'targets': 4},
  )
  np.testing.assert_array_equal(ex['decoder_target_tokens'], [8, 9, P, P, 3, 4, 1, 0, 0, 0])
  np.testing.assert_array_equal(ex['decoder_input_tokens'], [0, 8, 9, P, P, 3, 4, 1, 0, 0])
  np.testing.assert_array_equal(ex['decoder_loss_weights'], [0, 0, 0, 0, 1, 1, 1, 0, 0, 0])
  # BOS, the prefix and both pauses attend to each other; the answer is causal.
  np.testing.assert_array_equal(ex['decoder_causal_attention'], [1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
  # The first weighted target is predicted at the position whose input is the last pause.
  first = int(np.argmax(ex['decoder_loss_weights']))
  assert ex['decoder_input_tokens'][first] == P


def test_token_id_0_is_a_token_not_padding():
  """GPT-2's id 0 is '!': it gets loss and prefix attention like any token; padding does not."""
  lm = feature_converters.PauseLMFeatureConverter(pause_id=P, pack=False)
  (ex,) = _convert(lm, [{'targets': [0, 5, P, 0, 1]}], {'targets': 7})
  np.testing.assert_array_equal(ex['decoder_target_tokens'], [0, 5, P, 0, 1, 0, 0])
  np.testing.assert_array_equal(ex['decoder_input_tokens'], [0, 0, 5, P, 0, 1, 0])
  np.testing.assert_array_equal(ex['decoder_loss_weights'], [1, 1, 0, 1, 1, 0, 0])
  packed = feature_converters.PauseLMFeatureConverter(pause_id=P, pack=True)
  (ex,) = _convert(packed, [{'targets': [5, 0]}, {'targets': [0, 1]}], {'targets': 5})
  np.testing.assert_array_equal(ex['decoder_target_tokens'], [5, 0, 0, 1, 0])
  np.testing.assert_array_equal(ex['decoder_loss_weights'], [1, 1, 1, 1, 0])
  np.testing.assert_array_equal(ex['decoder_segment_ids'], [1, 1, 2, 2, 0])
  prefix = feature_converters.PausePrefixLMFeatureConverter(pause_id=P, pack=False)
  (ex,) = _convert(prefix, [{'inputs': [0, 7, P], 'targets': [0, 1]}], {'inputs': 4, 'targets': 3})
  np.testing.assert_array_equal(ex['decoder_target_tokens'], [0, 7, P, 0, 1, 0, 0])
  np.testing.assert_array_equal(ex['decoder_loss_weights'], [0, 0, 0, 1, 1, 0, 0])
  np.testing.assert_array_equal(ex['decoder_causal_attention'], [1, 1, 1, 1, 0, 0, 0])


def test_a_start_token_other_than_0_comes_through_the_shift():
  converter = feature_converters.PauseLMFeatureConverter(pause_id=P, pack=True, bos_id=7)
  (ex,) = _convert(converter, [{'targets': [5, 0]}, {'targets': [0, 1]}], {'targets': 5})
  # seqio starts every segment with BOS, the padding's too (its weight is 0).
  np.testing.assert_array_equal(ex['decoder_input_tokens'], [7, 5, 7, 0, 7])
  np.testing.assert_array_equal(ex['decoder_loss_weights'], [1, 1, 1, 1, 0])


def _delay_converter(pack=False, delay_robust=True):
  return feature_converters.PausePrefixLMFeatureConverter(
    pause_id=P, pack=pack, causal_pauses=delay_robust, answer_at_every_delay=delay_robust
  )


def test_random_m_rows_teach_the_first_answer_token_after_every_number_of_pauses():
  """Issue 26: delay-robust rows. The pauses leave the bidirectional block (a pause attends
  to the prefix and the pauses before it; no prefix token attends to a pause), and the last
  prefix token and every pause but the last predict the answer's first token: the
  output after k pauses is then what inference with M = k reads, so one example teaches its
  answer after 0..M pauses. Rows without appended pauses are the paper's rows."""
  examples = [
    {'inputs': [8, 9, P, P, P], 'targets': [3, 4, 1]},  # M = 3
    {'inputs': [8, 9], 'targets': [3, 4, 1]},  # M = 0: nothing changes
    {'inputs': [P, P, 8, 9], 'targets': [3, 4, 1]},  # prepended: only the mask changes
  ]
  lengths = {'inputs': 6, 'targets': 4}
  three, zero, prepended = _convert(_delay_converter(), examples, lengths)
  plain = _convert(_delay_converter(delay_robust=False), examples, lengths)
  np.testing.assert_array_equal(three['decoder_input_tokens'], plain[0]['decoder_input_tokens'])
  np.testing.assert_array_equal(plain[0]['decoder_target_tokens'], [8, 9, P, P, P, 3, 4, 1, 0, 0])
  np.testing.assert_array_equal(three['decoder_target_tokens'], [8, 9, 3, 3, 3, 3, 4, 1, 0, 0])
  # The 4 positions that teach the first token: delay 0 weighs 1, the 3 pause delays 1 / 3
  # each (the first token 2 in all); the rest weigh 1 as before.
  third = 1 / 3
  np.testing.assert_allclose(
    three['decoder_loss_weights'], [0, 0, 1, third, third, third, 1, 1, 0, 0], rtol=1e-6
  )
  np.testing.assert_array_equal(plain[0]['decoder_causal_attention'], [1] * 6 + [0] * 4)
  np.testing.assert_array_equal(three['decoder_causal_attention'], [1] * 3 + [0] * 7)
  for key in zero:  # (the same values; the weights as float32)
    np.testing.assert_array_equal(zero[key], plain[1][key])
  np.testing.assert_array_equal(
    prepended['decoder_causal_attention'], [1, 0, 0, 1, 1, 0, 0, 0, 0, 0]
  )
  for key in ('decoder_target_tokens', 'decoder_loss_weights'):
    np.testing.assert_array_equal(prepended[key], plain[2][key])


def test_every_delay_targets_stay_inside_each_packed_example():
  examples = [
    {'inputs': [8, P, P], 'targets': [3, 1]},
    {'inputs': [9], 'targets': [4, 1]},
    {'inputs': [7, P], 'targets': [5, 6, 1]},
  ]
  (row,) = _convert(_delay_converter(pack=True), examples, {'inputs': 7, 'targets': 8})
  np.testing.assert_array_equal(
    row['decoder_target_tokens'], [8, 3, 3, 3, 1, 9, 4, 1, 7, 5, 5, 6, 1, 0, 0]
  )
  # Delay 0 weighs 1 in each example; the M pause delays 1 / M each (M = 2, 0 and 1).
  np.testing.assert_allclose(
    row['decoder_loss_weights'],
    [0, 1, 0.5, 0.5, 1, 0, 1, 1, 0, 1, 1, 1, 1, 0, 0],
    rtol=1e-6,
  )
  np.testing.assert_array_equal(row['decoder_segment_ids'], [1] * 5 + [2] * 3 + [3] * 5 + [0] * 2)


def test_delay_zero_weighs_one_and_the_pause_delays_share_one_more():
  """Issue 26's weight rule, pinned at every M of a `_pause0to10` task: of the M + 1
  positions teaching the first answer token, delay 0 (the last prefix token, StdFT's
  position) weighs 1 and each of the M pause delays 1 / M; the other answer tokens 1.
  Sharing one token's weight over all M + 1 (1 / 11 at delay 0 for M = 10) left
  finetuning 8-14 points below StdFT on issue 26's task; weight 1 or 1 / sqrt(M + 1) at
  every delay made most toy StdPT seeds answer only the most common letter."""
  for m in range(11):
    (row,) = _convert(
      _delay_converter(),
      [{'inputs': [8, 9] + [P] * m, 'targets': [3, 1]}],
      {'inputs': 12, 'targets': 2},
    )
    pauses = [1 / m] * m if m else []
    # Targets 8, 9 (the prefix: no loss), then the first token after 0..m pauses, then EOS.
    expected = [0, 0, 1] + pauses + [1] + [0] * (10 - m)
    np.testing.assert_allclose(row['decoder_loss_weights'], expected, rtol=1e-6)
    np.testing.assert_array_equal(row['decoder_target_tokens'][2 : m + 3], [3] * (m + 1))
    first_token = row['decoder_loss_weights'][2 : m + 3].sum()
    np.testing.assert_allclose(first_token, 2 if m else 1, rtol=1e-6)
