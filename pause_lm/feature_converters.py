"""seqio feature converters whose loss weights skip every `<pause>` target.

seqio's converters weight every non-padding target. Pause-pretraining must not ask the model to
predict pauses (Section 3.1: the loss skips positions whose *next* token is a pause), while a
position whose *input* is a pause still learns to predict the next real token: that is what
pause-inference relies on. So only the target side is masked.
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

  def _convert_example(self, features):
    converted = dict(super()._convert_example(features))
    not_pause = tf.not_equal(converted["decoder_target_tokens"], self._pause_id)
    converted["decoder_loss_weights"] *= tf.cast(not_pause, converted["decoder_loss_weights"].dtype)
    return converted


class PauseLMFeatureConverter(_PauseMaskMixin, seqio.LMFeatureConverter):
  """Decoder-only LM features for (pause-)pretraining."""


class PausePrefixLMFeatureConverter(_PauseMaskMixin, seqio.PrefixLMFeatureConverter):
  """Prefix-LM features for finetuning: bidirectional over the prefix and its pauses."""
