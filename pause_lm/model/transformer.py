"""GPT-2-style (default) or Llama-family decoder whose embedding table carries the <pause> row.

The default architecture is the one that reproduces the paper's Table 5 parameter counts exactly
(130M: 136,237,056; 1B: 1,345,085,440, both at 32,297 embedding rows): learned absolute positions,
pre-LayerNorm blocks with scale and bias, biases on every projection, a plain GELU MLP, a final
LayerNorm and an untied output projection without bias. `<pause>` is an ordinary embedding row, so
nothing here knows about it.

The same module also builds the Llama family that pretrained checkpoints use (see
`pause_lm.hf.models`): RMSNorm, rotary position embeddings (`pause_lm.model.rope`), a SwiGLU MLP,
grouped- or multi-query attention (`num_kv_heads`), tied input/output embeddings and optional
q/k/v biases (Qwen2); per-head q/k RMSNorm and a head size of its own (Qwen3); and Gemma 3's
(1 + w) RMSNorm, norms after attention and the MLP, a GeGLU MLP, embeddings scaled by
sqrt(emb_dim), `query_pre_attn_scalar`, and sliding-window attention on the layers
`layer_types` marks, with their own RoPE base. Each is one ModelConfig field, so a family is a
gin model file (gin/models/llama_tiny.gin, qwen3_0_6b.gin, gemma3_270m.gin).

Sliding-window layers see the keys whose position is less than `sliding_window` from the query's
(`|q - k| < window`, which under a causal mask is Hugging Face's `k > q - window`), in training,
prefill and every KV-cache step alike. A window no shorter than the keys (the sequence, or the
KV cache's rows) hides nothing and is not applied, so such a model computes exactly what full
attention does; a shorter one runs masked attention on XLA (no fused cuDNN kernel). The KV cache
keeps every position (it is not trimmed to the window).

Masks follow seqio's feature conventions rather than token ids, because the BOS id and the padding
id are both 0: causal by array index, bidirectional among positions with
`decoder_causal_attention == 1` (prefix-LM), and never across `decoder_segment_ids` (packing).
Right padding is always in the future of real tokens, so it needs no mask of its own.

Every parameter carries logical axis names and the main activations are constrained to them, so a
trainer can shard the model with logical-to-mesh rules. For KV-cache decoding the same module has
two more entry points, `Decoder.prefill` and `Decoder.decode_step` (see `pause_lm.model.decoding`);
the same parameters serve all three.
"""

import dataclasses
import enum
import functools
from typing import Any

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np

from pause_lm.model import rope

_REMAT_POLICIES = {
  'none': None,
  'full': jax.checkpoint_policies.nothing_saveable,
  'dots_saveable': jax.checkpoint_policies.dots_saveable,
  'dots_with_no_batch_dims_saveable': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
# gemma_rms_norm: RMSNorm computed in float32 and scaled by (1 + w), w starting at 0 (Gemma).
_NORMS = ('layer_norm', 'rms_norm', 'gemma_rms_norm')
_POSITION_EMBEDDINGS = ('learned', 'rope')
_MLP_ACTIVATIONS = ('gelu', 'swiglu', 'geglu')
_GATED = ('swiglu', 'geglu')
FULL_ATTENTION, SLIDING_ATTENTION = 'full_attention', 'sliding_attention'  # HF's layer_types
_INIT_STDDEV = 0.02  # GPT-2's initialiser; residual output projections are scaled further by depth.


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Sizes and numerics of the decoder; every field is a gin binding (see gin/models/)."""

  # Rows of the embedding table: tokenizer vocabulary + 1 pause row, padded for alignment. None
  # means "not known yet": the caller fills it in from the task's vocabulary.
  num_embeddings: int | None = None
  num_layers: int = 2
  num_heads: int = 4
  emb_dim: int = 128
  mlp_dim: int = 512
  max_len: int = 2048
  dropout_rate: float = 0.0
  # Strings such as 'bfloat16' are accepted so that gin files need no dtype constants.
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat_policy: str = 'none'
  scan_layers: bool = False
  # Passed to jax.nn.dot_product_attention: None/'xla' everywhere, 'cudnn' for the fused GPU
  # kernel (which needs a 16-bit dtype).
  attention_impl: str | None = None
  # Model family. The defaults are GPT-2 (the paper's architecture); Llama sets rms_norm, rope,
  # swiglu, no biases; Qwen2 is Llama with qkv_bias; GPT-2 checkpoints tie the embeddings.
  num_kv_heads: int | None = None  # key/value heads (grouped-query attention); None = num_heads
  norm: str = 'layer_norm'  # or "rms_norm" (no bias, no mean subtraction)
  norm_epsilon: float = 1e-5
  position_embedding: str = 'learned'  # or "rope": rotary, no position table
  rope_theta: float = 10_000.0
  rope_scaling: str | None = None  # None, "linear" or "llama3" (HF config's rope_scaling type)
  rope_scaling_factor: float = 1.0
  rope_low_freq_factor: float = 1.0  # llama3 only
  rope_high_freq_factor: float = 4.0  # llama3 only
  rope_original_max_len: int = 8192  # llama3 only: original_max_position_embeddings
  mlp_activation: str = 'gelu'  # tanh-approximate GELU, or "swiglu": silu(x W_0) * (x W_1)
  qkv_bias: bool = True  # biases on the query, key and value projections
  dense_bias: bool = True  # biases on the attention output and MLP projections
  tie_embeddings: bool = False  # the output projection is the transposed input embedding
  # Qwen3 and Gemma 3 (each default is the behaviour before these fields existed).
  attention_head_dim: int | None = None  # size of one head; None = emb_dim // num_heads
  qk_norm: bool = False  # a norm (of `norm`'s kind) over each query and key head, before RoPE
  post_norms: bool = False  # also a norm after attention and after the MLP (Gemma's sandwich)
  scale_embeddings: bool = False  # input embeddings times sqrt(emb_dim), in the compute dtype
  query_pre_attn_scalar: float | None = None  # attention scale 1/sqrt(this); None = head_dim
  # Per layer, 'full_attention' or 'sliding_attention' (HF's layer_types); None = all full.
  layer_types: tuple[str, ...] | None = None
  sliding_window: int | None = None  # keys a sliding layer's query sees: |q - k| < window
  rope_local_theta: float | None = None  # RoPE base of sliding layers (unscaled); None = rope_theta

  def __post_init__(self):
    # Frozen dataclass: normalise through object.__setattr__ so configs stay hashable (jit-static).
    object.__setattr__(self, 'dtype', jnp.dtype(self.dtype))
    object.__setattr__(self, 'param_dtype', jnp.dtype(self.param_dtype))
    if self.layer_types is not None:
      object.__setattr__(self, 'layer_types', tuple(self.layer_types))
    if self.remat_policy not in _REMAT_POLICIES:
      raise ValueError(
        f'remat_policy must be one of {sorted(_REMAT_POLICIES)}, got {self.remat_policy!r}'
      )
    if self.attention_head_dim is None and self.emb_dim % self.num_heads:
      raise ValueError(f'emb_dim {self.emb_dim} is not divisible by num_heads {self.num_heads}')
    for field, value, allowed in (
      ('norm', self.norm, _NORMS),
      ('position_embedding', self.position_embedding, _POSITION_EMBEDDINGS),
      ('mlp_activation', self.mlp_activation, _MLP_ACTIVATIONS),
      ('rope_scaling', self.rope_scaling, rope.SCALINGS),
      ('attention_impl', self.attention_impl, (None, 'xla', 'cudnn')),
    ):
      if value not in allowed:
        raise ValueError(f'ModelConfig.{field} must be one of {allowed}, got {value!r}')
    if self.num_heads % self.kv_heads:
      raise ValueError(
        f'num_heads {self.num_heads} is not a multiple of num_kv_heads '
        f'{self.num_kv_heads}: each key/value head serves a whole group of '
        'query heads'
      )
    if self.position_embedding == 'rope' and self.head_dim % 2:
      raise ValueError(f'rotary position embeddings need an even head_dim, got {self.head_dim}')
    self._check_layer_types()

  def _check_layer_types(self) -> None:
    for field in ('attention_head_dim', 'sliding_window'):
      value = getattr(self, field)
      if value is not None and (not isinstance(value, int) or value <= 0):
        raise ValueError(f'ModelConfig.{field} must be a positive integer or None, got {value!r}')
    if self.layer_types is None:
      return
    if len(self.layer_types) != self.num_layers:
      raise ValueError(
        f'ModelConfig.layer_types has {len(self.layer_types)} entries for {self.num_layers} layers'
      )
    unknown = set(self.layer_types) - {FULL_ATTENTION, SLIDING_ATTENTION}
    if unknown:
      raise ValueError(
        f'ModelConfig.layer_types must hold {FULL_ATTENTION!r} or {SLIDING_ATTENTION!r}, got '
        f'{sorted(unknown)}'
      )
    if SLIDING_ATTENTION in self.layer_types and self.sliding_window is None:
      raise ValueError('ModelConfig.layer_types has sliding layers but sliding_window is None')

  @property
  def head_dim(self) -> int:
    if self.attention_head_dim is not None:
      return self.attention_head_dim
    return self.emb_dim // self.num_heads

  @property
  def has_sliding_layers(self) -> bool:
    return self.layer_types is not None and SLIDING_ATTENTION in self.layer_types

  def sliding_layers(self) -> tuple[bool, ...]:
    """Per layer, whether it attends through the sliding window."""
    if self.layer_types is None:
      return (False,) * self.num_layers
    return tuple(kind == SLIDING_ATTENTION for kind in self.layer_types)

  @property
  def kv_heads(self) -> int:
    return self.num_heads if self.num_kv_heads is None else self.num_kv_heads

  def rope_frequencies(self):
    return rope.inverse_frequencies(
      self.head_dim,
      self.rope_theta,
      self.rope_scaling,
      self.rope_scaling_factor,
      self.rope_low_freq_factor,
      self.rope_high_freq_factor,
      self.rope_original_max_len,
    )

  def rope_local_frequencies(self):
    """The sliding layers' frequencies: base `rope_local_theta`, never scaled (as Gemma 3)."""
    theta = self.rope_theta if self.rope_local_theta is None else self.rope_local_theta
    return rope.inverse_frequencies(self.head_dim, theta)

  def matmul_params(self) -> int:
    """Weights that take part in a matrix multiply per token (lookups and biases excluded)."""
    if self.num_embeddings is None:
      raise ValueError('num_embeddings is not set')
    d, f = self.emb_dim, self.mlp_dim
    # q, out; k, v (GQA: fewer). The heads' width is emb_dim unless attention_head_dim sets it.
    attention = 2 * d * self.num_heads * self.head_dim + 2 * d * self.kv_heads * self.head_dim
    mlp = (3 if self.mlp_activation in _GATED else 2) * d * f  # SwiGLU/GeGLU have a gate matrix
    return self.num_layers * (attention + mlp) + d * self.num_embeddings

  def flops_per_token(self, seq_len: int) -> float:
    """Training FLOPs per token: 6 * matmul_params + 12 * num_layers * emb_dim * seq_len.

    The first term is forward (2) plus backward (4) FLOPs per weight (grouped-query attention has
    smaller key/value matrices, SwiGLU a third MLP matrix, and a tied output head still multiplies);
    the second is the attention score and value products (2 * 2 * seq_len * emb_dim per layer
    forward, times 3 for training; the query heads set it, whatever num_kv_heads is),
    counted over the full seq_len x seq_len matrix as in the PaLM paper's MFU convention, i.e.
    without halving for the causal mask.
    """
    return 6.0 * self.matmul_params() + 12.0 * self.num_layers * self.emb_dim * seq_len


def _dense_init(scale: float = 1.0):
  return nn.initializers.normal(stddev=_INIT_STDDEV * scale)


def _partitioned(init, names):
  return nn.with_logical_partitioning(init, names)


class GemmaRMSNorm(nn.Module):
  """Gemma's RMSNorm: x / rms(x) * (1 + scale), in float32, then cast to the compute dtype.

  `scale` starts at zero (an identity norm), as Hugging Face's Gemma3RMSNorm initialises it.
  """

  epsilon: float
  dtype: Any
  param_dtype: Any
  axis_name: str = 'embed'

  @nn.compact
  def __call__(self, x):
    scale = self.param(
      'scale',
      _partitioned(nn.initializers.zeros, (self.axis_name,)),
      (x.shape[-1],),
      self.param_dtype,
    )
    y = x.astype(jnp.float32)
    y = y * jax.lax.rsqrt(jnp.mean(jnp.square(y), axis=-1, keepdims=True) + self.epsilon)
    return (y * (1.0 + scale.astype(jnp.float32))).astype(self.dtype)


def _norm(config: ModelConfig, name: str, axis_name: str = 'embed') -> nn.Module:
  if config.norm == 'gemma_rms_norm':
    return GemmaRMSNorm(
      config.norm_epsilon, config.dtype, config.param_dtype, axis_name=axis_name, name=name
    )
  if config.norm == 'rms_norm':
    return nn.RMSNorm(
      epsilon=config.norm_epsilon,
      dtype=config.dtype,
      param_dtype=config.param_dtype,
      name=name,
      scale_init=_partitioned(nn.initializers.ones, (axis_name,)),
    )
  return nn.LayerNorm(
    epsilon=config.norm_epsilon,
    dtype=config.dtype,
    param_dtype=config.param_dtype,
    name=name,
    scale_init=_partitioned(nn.initializers.ones, (axis_name,)),
    bias_init=_partitioned(nn.initializers.zeros, (axis_name,)),
  )


class CacheMode(enum.Enum):
  """How a forward pass uses the KV cache (the mutable 'cache' collection).

  A static attribute of the attention layers rather than a call argument, so that nn.remat and
  nn.scan (which only thread arrays) can wrap the blocks.
  """

  NONE = 'none'  # Training and evaluation: no cache.
  PREFILL = 'prefill'  # Attend over the whole prefix as in training; store its keys and values.
  STEP = 'step'  # One new token per example: extend the cache at its position, attend over it.


def _write_at(cache: jax.Array, update: jax.Array, index: jax.Array) -> jax.Array:
  """Writes update[b] ([C, heads, kv]) into cache[b] ([T, heads, kv]) from row index[b] on."""
  return jax.vmap(lambda c, u, i: jax.lax.dynamic_update_slice(c, u, (i, 0, 0)))(
    cache, update, index
  )


class _HeadDense(nn.Module):
  """A (biased) projection whose kernel is declared at its real rank.

  nn.DenseGeneral initialises (and, during apply, re-checks) its kernel through a flattened
  rank-2 shape, so a 3-name logical partitioning on it becomes a sharding constraint on a rank-2
  array and fails once a mesh and logical rules are active. Declaring [in..., out...] directly
  keeps the names valid; parameter names, shapes and the computation are DenseGeneral's.
  """

  features: tuple[int, ...]
  in_dims: int
  kernel_names: tuple[str, ...]
  bias_names: tuple[str, ...]
  config: ModelConfig
  init_scale: float = 1.0
  use_bias: bool = True

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    in_shape = x.shape[-self.in_dims :]
    kernel = self.param(
      'kernel',
      _partitioned(_dense_init(self.init_scale), self.kernel_names),
      (*in_shape, *self.features),
      cfg.param_dtype,
    )
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=cfg.dtype)
    contract = tuple(range(x.ndim - self.in_dims, x.ndim))
    out = jax.lax.dot_general(x, kernel, ((contract, tuple(range(self.in_dims))), ((), ())))
    if not self.use_bias:
      return out
    bias = self.param(
      'bias', _partitioned(nn.initializers.zeros, self.bias_names), self.features, cfg.param_dtype
    )
    return out + jnp.asarray(bias, cfg.dtype)


class Attention(nn.Module):
  """Multi-head (or grouped-query) self-attention with an optional KV cache.

  With `num_kv_heads < num_heads` the key/value projections (and the cache) have fewer heads;
  jax.nn.dot_product_attention shares each among its group of query heads. Rotary embeddings are
  applied to queries and keys before caching, so cached keys are already rotated.

  `sliding` is None for a model without sliding layers, else a boolean scalar (an array, so that
  nn.scan can hand each layer its own): this layer then sees only keys within the window and
  rotates by the local RoPE base.
  """

  config: ModelConfig
  cache_mode: CacheMode = CacheMode.NONE
  cache_len: int | None = None

  @nn.compact
  def __call__(self, x, mask, positions, sliding=None):
    cfg = self.config
    query_projection = functools.partial(
      _HeadDense,
      (cfg.num_heads, cfg.head_dim),
      1,
      ('embed', 'heads', 'kv'),
      ('heads', 'kv'),
      cfg,
      use_bias=cfg.qkv_bias,
    )
    kv_projection = functools.partial(
      _HeadDense,
      (cfg.kv_heads, cfg.head_dim),
      1,
      ('embed', 'kv_heads', 'kv'),
      ('kv_heads', 'kv'),
      cfg,
      use_bias=cfg.qkv_bias,
    )
    qkv_axes = ('activation_batch', 'activation_length', 'activation_heads', 'activation_kv')
    kv_axes = ('activation_batch', 'activation_length', 'activation_kv_heads', 'activation_kv')
    query = nn.with_logical_constraint(query_projection(name='query')(x), qkv_axes)
    key = nn.with_logical_constraint(kv_projection(name='key')(x), kv_axes)
    value = nn.with_logical_constraint(kv_projection(name='value')(x), kv_axes)
    if cfg.qk_norm:
      query = _norm(cfg, 'query_norm', 'kv')(query)
      key = _norm(cfg, 'key_norm', 'kv')(key)
    if cfg.position_embedding == 'rope':
      inv_freq = cfg.rope_frequencies()
      local_freq = cfg.rope_local_frequencies()
      if sliding is not None and not np.array_equal(local_freq, inv_freq):
        inv_freq = jnp.where(sliding, jnp.asarray(local_freq), jnp.asarray(inv_freq))
      query = rope.apply_rotary(query, positions, inv_freq)
      key = rope.apply_rotary(key, positions, inv_freq)

    key_positions = positions
    if self.cache_mode is CacheMode.PREFILL:
      self._prefill_cache(key, value)
    elif self.cache_mode is CacheMode.STEP:
      key, value, mask = self._extend_cache(key, value, positions)
      key_positions = jnp.arange(key.shape[1])[None, :]  # cache row = position
    # A window as long as the keys hides none of them (positions differ by less than the keys'
    # count): no mask then, so the result is exactly full attention's and cuDNN's kernel may run.
    if sliding is not None and cfg.sliding_window < key.shape[1]:
      mask = _within_window(mask, positions, key_positions, sliding, cfg.sliding_window)

    # The configured kernel (cuDNN's fused one on GPUs) runs the plainly causal case it was
    # measured on; masked attention (prefix-LM, packing, the KV cache) stays on XLA's.
    out = jax.nn.dot_product_attention(
      query,
      key,
      value,
      mask=mask,
      scale=None if cfg.query_pre_attn_scalar is None else cfg.query_pre_attn_scalar**-0.5,
      is_causal=mask is None,
      implementation=cfg.attention_impl if mask is None else None,
    )
    out = nn.with_logical_constraint(out, qkv_axes)
    return _HeadDense(
      (cfg.emb_dim,),
      2,
      ('heads', 'kv', 'embed'),
      ('embed',),
      cfg,
      init_scale=1 / (2 * cfg.num_layers) ** 0.5,
      use_bias=cfg.dense_bias,
      name='out',
    )(out)

  def _cache(self, batch: int):
    cfg = self.config
    shape = (batch, self.cache_len, cfg.kv_heads, cfg.head_dim)
    cached_key = self.variable('cache', 'cached_key', jnp.zeros, shape, cfg.dtype)
    cached_value = self.variable('cache', 'cached_value', jnp.zeros, shape, cfg.dtype)
    return cached_key, cached_value

  def _prefill_cache(self, key, value) -> None:
    """Keeps the prefix's keys and values; it attends over the fresh ones, masked as in training."""
    cached_key, cached_value = self._cache(key.shape[0])
    cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, key, (0, 0, 0, 0))
    cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, value, (0, 0, 0, 0))

  def _extend_cache(self, key, value, positions):
    """Writes each example's new tokens (one when decoding, a continuation when scoring after a
    shared prefix) from its own position on: right-padded batches differ. The positions of an
    example are consecutive, and cache_len leaves room for all of them.

    Returns:
      The whole cached keys and values, and the mask under which the new tokens see them.
    """
    cached_key, cached_value = self._cache(key.shape[0])
    index = positions[:, 0]
    cached_key.value = _write_at(cached_key.value, key, index)
    cached_value.value = _write_at(cached_value.value, value, index)
    # A new token is a target: it sees everything up to and including itself (rows after it
    # hold padding or stale entries and are never seen).
    rows = jnp.arange(cached_key.value.shape[1])
    mask = (rows[None, None, :] <= positions[:, :, None])[:, None]
    return cached_key.value, cached_value.value, mask


def _within_window(mask, query_positions, key_positions, sliding, window: int):
  """`mask` (None: causal) AND |q - k| < window where `sliding` (a boolean scalar) is true."""
  if mask is None:
    mask = attention_mask(query_positions.shape[1])
  distance = query_positions[:, :, None] - key_positions[:, None, :]
  near = (jnp.abs(distance) < window)[:, None]
  return mask & (near | ~sliding)


class Mlp(nn.Module):
  """emb -> mlp -> emb: GPT-2's GELU MLP (`wi`, `wo`), or a gated one (`wi_0` gate, `wi_1`):
  Llama's SwiGLU, silu(x W_0) * x W_1, or Gemma's GeGLU, tanh-approximate gelu(x W_0) * x W_1."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.config

    def dense(features, names, name, scale=1.0):
      return nn.Dense(
        features,
        use_bias=cfg.dense_bias,
        dtype=cfg.dtype,
        param_dtype=cfg.param_dtype,
        kernel_init=_partitioned(_dense_init(scale), names),
        bias_init=_partitioned(nn.initializers.zeros, names[1:]),
        name=name,
      )

    if cfg.mlp_activation in _GATED:
      gate = nn.silu if cfg.mlp_activation == 'swiglu' else nn.gelu  # tanh-approximate
      h = gate(dense(cfg.mlp_dim, ('embed', 'mlp'), 'wi_0')(x)) * dense(
        cfg.mlp_dim, ('embed', 'mlp'), 'wi_1'
      )(x)
    else:
      h = nn.gelu(dense(cfg.mlp_dim, ('embed', 'mlp'), 'wi')(x))
    h = nn.with_logical_constraint(h, ('activation_batch', 'activation_length', 'activation_mlp'))
    return dense(cfg.emb_dim, ('mlp', 'embed'), 'wo', 1 / (2 * cfg.num_layers) ** 0.5)(h)


class DecoderBlock(nn.Module):
  """Pre-norm transformer block.

  Static choices (dropout on/off, cache mode) are attributes rather than call arguments so that
  the block can be wrapped by nn.remat and nn.scan, which only thread arrays.
  """

  config: ModelConfig
  deterministic: bool = True
  cache_mode: CacheMode = CacheMode.NONE
  cache_len: int | None = None

  @nn.compact
  def __call__(self, x, mask, positions, sliding=None):
    cfg = self.config
    dropout = nn.Dropout(cfg.dropout_rate, deterministic=self.deterministic)
    h = _norm(cfg, 'pre_attention_norm')(x)
    h = Attention(cfg, self.cache_mode, self.cache_len, name='attention')(
      h, mask, positions, sliding
    )
    if cfg.post_norms:
      h = _norm(cfg, 'post_attention_norm')(h)
    x = x + dropout(h)
    h = _norm(cfg, 'pre_mlp_norm')(x)
    h = Mlp(cfg, name='mlp')(h)
    if cfg.post_norms:
      h = _norm(cfg, 'post_mlp_norm')(h)
    x = x + dropout(h)
    x = nn.with_logical_constraint(x, ('activation_batch', 'activation_length', 'activation_embed'))
    if cfg.scan_layers:
      return x, None
    return x


def attention_mask(length: int, causal_attention=None, segment_ids=None) -> jax.Array:
  """Boolean [batch or 1, 1, length, length] mask: causal, OR prefix-LM block, AND same segment."""
  idx = jnp.arange(length)
  mask = (idx[None, :] <= idx[:, None])[None]
  if causal_attention is not None:
    prefix = causal_attention.astype(bool)
    mask = mask | (prefix[:, :, None] & prefix[:, None, :])
  if segment_ids is not None:
    mask = mask & (segment_ids[:, :, None] == segment_ids[:, None, :])
  return mask[:, None]


class Decoder(nn.Module):
  """Token ids in, float32 logits over all embedding rows out.

  `__call__` is the training and evaluation pass; `prefill` and `decode_step` are the two halves
  of KV-cache decoding (call them with `model.apply(..., method=..., mutable=['cache'])`). All
  three run the one `_forward`, so parameters and numerics are shared by construction.
  """

  config: ModelConfig

  def __call__(
    self,
    decoder_input_tokens,
    decoder_positions=None,
    decoder_segment_ids=None,
    decoder_causal_attention=None,
    *,
    deterministic=True,
  ):
    """Runs the decoder.

    Args:
      decoder_input_tokens: int [batch, length], targets shifted right (seqio convention).
      decoder_positions: int [batch, length]; defaults to 0..length-1.
      decoder_segment_ids: int [batch, length] for packed batches; segments never see each other.
      decoder_causal_attention: int [batch, length], 1 over the bidirectional prefix region.
      deterministic: disables dropout.

    Returns:
      float32 logits [batch, length, num_embeddings].
    """
    return self._forward(
      decoder_input_tokens,
      decoder_positions,
      decoder_segment_ids,
      decoder_causal_attention,
      deterministic=deterministic,
    )

  def prefill(
    self, decoder_input_tokens, decoder_causal_attention=None, *, cache_len, logit_indices
  ):
    """Runs the prefix and stores its keys and values in the mutable 'cache' collection.

    Args:
      decoder_input_tokens: int [batch, length], BOS + the right-padded prefix.
      decoder_causal_attention: int [batch, length], 1 over the bidirectional prefix region.
      cache_len: rows of the KV cache to allocate (prefix plus every token to be generated).
      logit_indices: int [batch]; project only the hidden state at this index of each row (a
        prefill needs one logit per example, and the output projection is the costliest matmul
        of a small model).

    Returns:
      float32 logits [batch, 1, num_embeddings].
    """
    return self._forward(
      decoder_input_tokens,
      None,
      None,
      decoder_causal_attention,
      cache_mode=CacheMode.PREFILL,
      cache_len=cache_len,
      logit_indices=logit_indices,
    )

  def decode_step(self, decoder_input_tokens, decoder_positions):
    """Feeds new tokens, extending the KV cache that `prefill` filled: one per example when
    decoding, or a whole continuation when scoring candidates after one shared prefix
    (`decoding.score_after_prefix`). Each token sees the cache up to its own position.

    Args:
      decoder_input_tokens: int [batch, C], each example's newest C tokens.
      decoder_positions: int [batch, C], their consecutive positions: also the cache rows
        they are written to.

    Returns:
      float32 logits [batch, C, num_embeddings].
    """
    return self._forward(decoder_input_tokens, decoder_positions, cache_mode=CacheMode.STEP)

  @nn.compact
  def _forward(
    self,
    decoder_input_tokens,
    decoder_positions=None,
    decoder_segment_ids=None,
    decoder_causal_attention=None,
    *,
    deterministic=True,
    cache_mode=CacheMode.NONE,
    cache_len=None,
    logit_indices=None,
  ):
    cfg = self.config
    if cfg.num_embeddings is None:
      raise ValueError(
        'ModelConfig.num_embeddings is None: set it from the vocabulary '
        '(or bind NUM_EMBEDDINGS in gin)'
      )
    length = decoder_input_tokens.shape[1]
    if decoder_positions is None:
      decoder_positions = jnp.broadcast_to(jnp.arange(length), decoder_input_tokens.shape)

    token_embed = nn.Embed(
      cfg.num_embeddings,
      cfg.emb_dim,
      dtype=cfg.dtype,
      param_dtype=cfg.param_dtype,
      embedding_init=_partitioned(_dense_init(), ('vocab', 'embed')),
      name='token_embed',
    )
    x = token_embed(decoder_input_tokens)
    if cfg.scale_embeddings:
      # As Gemma: the scale is cast to the embeddings' dtype first (bfloat16 rounds it).
      x = x * jnp.asarray(cfg.emb_dim**0.5, x.dtype)
    if cfg.position_embedding == 'learned':
      # The position table's first axis is left unnamed: it is small and never worth sharding.
      position_embed = nn.Embed(
        cfg.max_len,
        cfg.emb_dim,
        dtype=cfg.dtype,
        param_dtype=cfg.param_dtype,
        embedding_init=_partitioned(_dense_init(), (None, 'embed')),
        name='position_embed',
      )
      x = x + position_embed(decoder_positions)
    x = nn.Dropout(cfg.dropout_rate, deterministic=deterministic)(x)
    x = nn.with_logical_constraint(x, ('activation_batch', 'activation_length', 'activation_embed'))

    # None means plainly causal: attention then takes `is_causal`, which cuDNN's fused kernel
    # runs without materialising a [length, length] mask.
    mask = None
    if decoder_causal_attention is not None or decoder_segment_ids is not None:
      mask = attention_mask(length, decoder_causal_attention, decoder_segment_ids)

    x = _layers(cfg, x, mask, decoder_positions, deterministic, cache_mode, cache_len)
    if logit_indices is not None:
      x = jnp.take_along_axis(x, logit_indices[:, None, None], axis=1)
    return _output_logits(cfg, token_embed, _norm(cfg, 'final_norm')(x))


# The two helpers below build submodules of the calling `Decoder` (inside its compact method), so
# their parameters are named exactly as if they were written inline.


def _layers(cfg: ModelConfig, x, mask, positions, deterministic, cache_mode, cache_len):
  """Runs the blocks: one after another, or as one nn.scan over stacked parameters."""
  block = DecoderBlock
  policy = _REMAT_POLICIES[cfg.remat_policy]
  if policy is not None and cache_mode is CacheMode.NONE:
    block = nn.remat(block, policy=policy, prevent_cse=not cfg.scan_layers)
  # Sliding layers get a per-layer boolean (scanned over with the parameters); models without
  # them call the blocks exactly as before.
  sliding = jnp.asarray(cfg.sliding_layers()) if cfg.has_sliding_layers else None
  if cfg.scan_layers:
    stack = nn.scan(
      block,
      variable_axes={'params': 0, 'cache': 0},
      split_rngs={'params': True, 'dropout': True},
      in_axes=(nn.broadcast, nn.broadcast) + (() if sliding is None else (0,)),
      length=cfg.num_layers,
      metadata_params={nn.PARTITION_NAME: 'layers'},
    )
    extra = () if sliding is None else (sliding,)
    x, _ = stack(cfg, deterministic, cache_mode, cache_len, name='layers')(
      x, mask, positions, *extra
    )
    return x
  for i in range(cfg.num_layers):
    extra = () if sliding is None else (sliding[i],)
    x = block(cfg, deterministic, cache_mode, cache_len, name=f'layers_{i}')(
      x, mask, positions, *extra
    )
  return x


def _output_logits(cfg: ModelConfig, token_embed: nn.Embed, x):
  """float32 logits of the final hidden states: the tied table or the `logits` projection."""
  if cfg.tie_embeddings:
    logits = token_embed.attend(x)
  else:
    logits = nn.Dense(
      cfg.num_embeddings,
      use_bias=False,
      dtype=cfg.dtype,
      param_dtype=cfg.param_dtype,
      kernel_init=_partitioned(_dense_init(), ('embed', 'vocab')),
      name='logits',
    )(x)
  logits = nn.with_logical_constraint(
    logits, ('activation_batch', 'activation_length', 'activation_vocab')
  )
  return logits.astype(jnp.float32)
