"""Rotary position embeddings (RoPE) as Llama-family checkpoints define them.

Hugging Face's Llama, Mistral, Qwen2, Qwen3 and Gemma 3 rotate the two halves of each head
(`rotate_half`), not interleaved pairs, and compute the angles in float32 from
`inv_freq = theta ** (-2i / head_dim)`. Matching that convention exactly is what lets converted
checkpoints give the same logits, so the frequencies are computed the same way (float32, even
exponents) and `rope_scaling` follows transformers' `_compute_llama3_parameters` and linear
position interpolation. Gemma 3's sliding layers use a base of their own, unscaled
(`ModelConfig.rope_local_frequencies`).

The angle is taken from each token's own position (`decoder_positions`), so packed segments that
restart at 0 and KV-cache steps at any index rotate exactly as a lone sequence would.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

SCALINGS = (None, 'linear', 'llama3')


def inverse_frequencies(
  head_dim: int,
  theta: float,
  scaling: str | None = None,
  factor: float = 1.0,
  low_freq_factor: float = 1.0,
  high_freq_factor: float = 4.0,
  original_max_len: int = 8192,
) -> np.ndarray:
  """float32 [head_dim // 2] angular frequencies, after any `rope_scaling`.

  Args:
    head_dim: size of one attention head (even).
    theta: the base (`rope_theta`).
    scaling: None, 'linear' (positions divided by `factor`) or 'llama3' (long wavelengths
      divided by `factor`, short ones kept, a smooth blend between them).
    factor: the scaling factor.
    low_freq_factor, high_freq_factor, original_max_len: Llama 3's blend bounds
      (`original_max_position_embeddings`).

  Returns:
    The frequencies, as transformers computes them.
  """
  if scaling not in SCALINGS:
    raise ValueError(f'rope_scaling must be one of {SCALINGS}, got {scaling!r}')
  exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
  inv_freq = (1.0 / (np.float32(theta) ** exponents)).astype(np.float32)
  if scaling == 'linear':
    return (inv_freq / np.float32(factor)).astype(np.float32)
  if scaling == 'llama3':
    low_freq_wavelen = original_max_len / low_freq_factor
    high_freq_wavelen = original_max_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (original_max_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)
  return inv_freq


def apply_rotary(x: jax.Array, positions: jax.Array, inv_freq: np.ndarray) -> jax.Array:
  """Rotates x [batch, length, heads, head_dim] by the angles of positions [batch, length]."""
  angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)  # [b, t, d/2]
  angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
  cos, sin = jnp.cos(angles).astype(x.dtype), jnp.sin(angles).astype(x.dtype)
  first, second = jnp.split(x, 2, axis=-1)
  rotated = jnp.concatenate([-second, first], axis=-1)
  return x * cos + rotated * sin
