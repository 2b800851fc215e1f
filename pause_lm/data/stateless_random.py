"""TensorFlow's stateless random stream in NumPy, for many seeds at once.

`tf.random.stateless_uniform(shape, seed, dtype=tf.uint32)` draws from Philox4x32-10 with a
key and counter scrambled from the seed. Pause injection needs one such stream per chunk, and a
TF op per chunk costs more than the whole injection; the same bits computed here for a batch of
seeds cost microseconds. `tests/test_stateless_random.py` checks them against TF bit for bit.
"""

import numpy as np

_MULTIPLIERS = (np.uint64(0xD2511F53), np.uint64(0xCD9E8D57))
_KEY_BUMPS = (np.uint64(0x9E3779B9), np.uint64(0xBB67AE85))
_SEED_KEY = (0x3EC8F720, 0x02461E29)  # the fixed key that scrambles a seed
_LOW = np.uint64(0xFFFFFFFF)
_32 = np.uint64(32)


def philox(counter: np.ndarray, key: np.ndarray) -> np.ndarray:
  """Philox4x32-10: uint32 counters [..., 4] and keys [..., 2] to four uint32 words each."""
  c0, c1, c2, c3 = (counter[..., i].astype(np.uint64) for i in range(4))
  k0, k1 = (key[..., i].astype(np.uint64) for i in range(2))
  for round_ in range(10):
    product0, product1 = _MULTIPLIERS[0] * c0, _MULTIPLIERS[1] * c2
    round_key0 = (k0 + np.uint64(round_) * _KEY_BUMPS[0]) & _LOW
    round_key1 = (k1 + np.uint64(round_) * _KEY_BUMPS[1]) & _LOW
    c0, c1, c2, c3 = (
      (product1 >> _32) ^ c1 ^ round_key0,
      product1 & _LOW,
      (product0 >> _32) ^ c3 ^ round_key1,
      product0 & _LOW,
    )
  return np.stack([c0, c1, c2, c3], axis=-1).astype(np.uint32)


def _split(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  return (words & _LOW).astype(np.uint32), (words >> _32).astype(np.uint32)


def uniform_uint32(seeds: np.ndarray, count: int) -> np.ndarray:
  """Row b equals `tf.random.stateless_uniform([count], seeds[b], dtype=tf.uint32)`.

  Args:
    seeds: int64 [batch, 2], TF stateless seeds.
    count: values per seed.

  Returns:
    uint32 [batch, count].
  """
  seeds = np.asarray(seeds, np.int64).view(np.uint64)
  batch = seeds.shape[0]
  counter = np.stack([*_split(seeds[:, 0]), *_split(seeds[:, 1])], axis=-1)
  mix = philox(counter, np.broadcast_to(np.array(_SEED_KEY, np.uint32), (batch, 2)))
  # The stream runs from counter (0, 0, mix[2], mix[3]) under key (mix[0], mix[1]), four
  # words per step; `count` stays far below 2**32 steps, so only the lowest word moves.
  steps = -(-count // 4)
  blocks = np.zeros((batch, steps, 4), np.uint32)
  blocks[..., 0] = np.arange(steps, dtype=np.uint32)
  blocks[..., 2:] = mix[:, None, 2:]
  words = philox(blocks, mix[:, None, :2])
  return words.reshape(batch, steps * 4)[:, :count]
