"""The pieces examples are made of: vocabularies with a `<pause>` row, the synthetic corpus,
SeqIO preprocessors (pause injection, appending), feature converters and pause variants.

Never imports tasks or the model; kept light (nothing imported here), so that the grid can use
`pause_lm.data.variants` without TensorFlow. The old `pause_lm.data` module's functions are in
`pause_lm.pipeline.datasets`.
"""

from pause_lm.runtime import compat as _compat


def __getattr__(name):
  return _compat.forward_attribute(__name__, name)
