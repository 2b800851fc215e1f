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


class PausePrefixLMFeatureConverter(_PauseMaskMixin, seqio.PrefixLMFeatureConverter):
  """Prefix-LM features for finetuning: bidirectional over the prefix and its pauses."""
