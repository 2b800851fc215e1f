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
