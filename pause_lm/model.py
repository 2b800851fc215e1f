"""GPT-2-style decoder whose embedding table carries the <pause> row.

The architecture is the one that reproduces the paper's Table 5 parameter counts exactly (130M:
136,237,056; 1B: 1,345,085,440, both at 32,297 embedding rows): learned absolute positions,
pre-LayerNorm blocks with scale and bias, biases on every projection, a plain GELU MLP, a final
LayerNorm and an untied output projection without bias. `<pause>` is an ordinary embedding row, so
nothing here knows about it.

Masks follow seqio's feature conventions rather than token ids, because the BOS id and the padding
id are both 0: causal by array index, bidirectional among positions with
`decoder_causal_attention == 1` (prefix-LM), and never across `decoder_segment_ids` (packing).
Right padding is always in the future of real tokens, so it needs no mask of its own.

Every parameter carries logical axis names and the main activations are constrained to them, so a
trainer can shard the model with logical-to-mesh rules. For KV-cache decoding the same module runs
in two extra modes (`cache_mode='prefill'` and `'step'`); see `pause_lm.decoding`.
"""

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

_REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
_CACHE_MODES = (None, "prefill", "step")
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
  remat_policy: str = "none"
  scan_layers: bool = False
  # Passed to jax.nn.dot_product_attention: None/'xla' everywhere, 'cudnn' for the fused GPU
  # kernel (which needs a 16-bit dtype).
  attention_impl: str | None = None

  def __post_init__(self):
    # Frozen dataclass: normalise through object.__setattr__ so configs stay hashable (jit-static).
    object.__setattr__(self, "dtype", jnp.dtype(self.dtype))
    object.__setattr__(self, "param_dtype", jnp.dtype(self.param_dtype))
    if self.remat_policy not in _REMAT_POLICIES:
      raise ValueError(f"remat_policy must be one of {sorted(_REMAT_POLICIES)}, "
                       f"got {self.remat_policy!r}")
    if self.emb_dim % self.num_heads:
      raise ValueError(f"emb_dim {self.emb_dim} is not divisible by num_heads {self.num_heads}")

  @property
  def head_dim(self) -> int:
    return self.emb_dim // self.num_heads

  def matmul_params(self) -> int:
    """Weights that take part in a matrix multiply per token (lookups and biases excluded)."""
    if self.num_embeddings is None:
      raise ValueError("num_embeddings is not set")
    d, f = self.emb_dim, self.mlp_dim
    return self.num_layers * (4 * d * d + 2 * d * f) + d * self.num_embeddings

  def flops_per_token(self, seq_len: int) -> float:
    """Training FLOPs per token: 6 * matmul_params + 12 * num_layers * emb_dim * seq_len.

    The first term is forward (2) plus backward (4) FLOPs per weight; the second is the attention
    score and value products (2 * 2 * seq_len * emb_dim per layer forward, times 3 for training),
    counted over the full seq_len x seq_len matrix as in the PaLM paper's MFU convention, i.e.
    without halving for the causal mask.
    """
    return 6.0 * self.matmul_params() + 12.0 * self.num_layers * self.emb_dim * seq_len


def _dense_init(scale: float = 1.0):
  return nn.initializers.normal(stddev=_INIT_STDDEV * scale)


def _partitioned(init, names):
  return nn.with_logical_partitioning(init, names)


def _layer_norm(config: ModelConfig, name: str) -> nn.LayerNorm:
  return nn.LayerNorm(
      epsilon=1e-5, dtype=config.dtype, param_dtype=config.param_dtype, name=name,
      scale_init=_partitioned(nn.initializers.ones, ("embed",)),
      bias_init=_partitioned(nn.initializers.zeros, ("embed",)))


def _write_at(cache: jax.Array, update: jax.Array, index: jax.Array) -> jax.Array:
  """Writes update[b] ([1, heads, kv]) into cache[b] ([T, heads, kv]) at row index[b]."""
  return jax.vmap(lambda c, u, i: jax.lax.dynamic_update_slice(c, u, (i, 0, 0)))(
      cache, update, index)


class _HeadDense(nn.Module):
  """A biased projection whose kernel is declared at its real rank.

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

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    in_shape = x.shape[-self.in_dims:]
    kernel = self.param("kernel", _partitioned(_dense_init(self.init_scale), self.kernel_names),
                        (*in_shape, *self.features), cfg.param_dtype)
    bias = self.param("bias", _partitioned(nn.initializers.zeros, self.bias_names),
                      self.features, cfg.param_dtype)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=cfg.dtype)
    contract = tuple(range(x.ndim - self.in_dims, x.ndim))
    out = jax.lax.dot_general(x, kernel, ((contract, tuple(range(self.in_dims))), ((), ())))
    return out + bias


class Attention(nn.Module):
  """Multi-head self-attention with biased q/k/v/output projections and an optional KV cache."""
  config: ModelConfig
  cache_mode: str | None = None
  cache_len: int | None = None

  @nn.compact
  def __call__(self, x, mask, positions):
    cfg = self.config
    projection = functools.partial(
        _HeadDense, (cfg.num_heads, cfg.head_dim), 1, ("embed", "heads", "kv"), ("heads", "kv"),
        cfg)
    qkv_axes = ("batch", "length", "heads", "kv")
    query = nn.with_logical_constraint(projection(name="query")(x), qkv_axes)
    key = nn.with_logical_constraint(projection(name="key")(x), qkv_axes)
    value = nn.with_logical_constraint(projection(name="value")(x), qkv_axes)

    if self.cache_mode is not None:
      batch = x.shape[0]
      shape = (batch, self.cache_len, cfg.num_heads, cfg.head_dim)
      cached_key = self.variable("cache", "cached_key", jnp.zeros, shape, cfg.dtype)
      cached_value = self.variable("cache", "cached_value", jnp.zeros, shape, cfg.dtype)
      if self.cache_mode == "prefill":
        # Attend over the fresh keys (prefill masks apply as in training); keep them for later.
        cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, key, (0, 0, 0, 0))
        cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, value, (0, 0, 0, 0))
      else:
        # One new token per example, written at its own position (right-padded batches differ).
        index = positions[:, 0]
        cached_key.value = _write_at(cached_key.value, key, index)
        cached_value.value = _write_at(cached_value.value, value, index)
        key, value = cached_key.value, cached_value.value
        # A generated token is a target: it sees everything up to and including itself.
        mask = (jnp.arange(key.shape[1])[None, :] <= index[:, None])[:, None, None, :]

    out = jax.nn.dot_product_attention(query, key, value, mask=mask,
                                       implementation=cfg.attention_impl)
    out = nn.with_logical_constraint(out, qkv_axes)
    return _HeadDense((cfg.emb_dim,), 2, ("heads", "kv", "embed"), ("embed",), cfg,
                      init_scale=1 / (2 * cfg.num_layers) ** 0.5, name="out")(out)


class Mlp(nn.Module):
  """emb -> mlp -> GELU -> emb, with biases (GPT-2's MLP, not a gated one)."""
  config: ModelConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    h = nn.Dense(cfg.mlp_dim, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                 kernel_init=_partitioned(_dense_init(), ("embed", "mlp")),
                 bias_init=_partitioned(nn.initializers.zeros, ("mlp",)), name="wi")(x)
    h = nn.with_logical_constraint(nn.gelu(h), ("batch", "length", "mlp"))
    return nn.Dense(cfg.emb_dim, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                    kernel_init=_partitioned(_dense_init(1 / (2 * cfg.num_layers) ** 0.5),
                                             ("mlp", "embed")),
                    bias_init=_partitioned(nn.initializers.zeros, ("embed",)), name="wo")(h)


class DecoderBlock(nn.Module):
  """Pre-LayerNorm transformer block.

  Static choices (dropout on/off, cache mode) are attributes rather than call arguments so that
  the block can be wrapped by nn.remat and nn.scan, which only thread arrays.
  """
  config: ModelConfig
  deterministic: bool = True
  cache_mode: str | None = None
  cache_len: int | None = None

  @nn.compact
  def __call__(self, x, mask, positions):
    cfg = self.config
    dropout = nn.Dropout(cfg.dropout_rate, deterministic=self.deterministic)
    h = _layer_norm(cfg, "pre_attention_norm")(x)
    h = Attention(cfg, self.cache_mode, self.cache_len, name="attention")(h, mask, positions)
    x = x + dropout(h)
    h = _layer_norm(cfg, "pre_mlp_norm")(x)
    x = x + dropout(Mlp(cfg, name="mlp")(h))
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
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
  """Token ids in, float32 logits over all embedding rows out."""
  config: ModelConfig

  @nn.compact
  def __call__(self, decoder_input_tokens, decoder_positions=None, decoder_segment_ids=None,
               decoder_causal_attention=None, *, deterministic=True, cache_mode=None,
               cache_len=None, logit_indices=None):
    """Runs the decoder.

    Args:
      decoder_input_tokens: int [batch, length], targets shifted right (seqio convention).
      decoder_positions: int [batch, length]; defaults to 0..length-1. In 'step' mode also the
        row of the KV cache each example writes to.
      decoder_segment_ids: int [batch, length] for packed batches; segments never see each other.
      decoder_causal_attention: int [batch, length], 1 over the bidirectional prefix region.
      deterministic: disables dropout.
      cache_mode: None (training/eval), 'prefill' (run the prefix and store its keys/values in
        the mutable 'cache' collection) or 'step' (one token per example, read/extend the cache).
      cache_len: rows of the KV cache to allocate; required in 'prefill' mode.
      logit_indices: optional int [batch]; project only the hidden state at this index of each
        row (a prefill needs one logit per example, and the output projection is the costliest
        matmul of a small model).

    Returns:
      float32 logits [batch, length, num_embeddings], or [batch, 1, num_embeddings] when
      logit_indices is given.
    """
    cfg = self.config
    if cfg.num_embeddings is None:
      raise ValueError("ModelConfig.num_embeddings is None: set it from the vocabulary "
                       "(or bind NUM_EMBEDDINGS in gin)")
    if cache_mode not in _CACHE_MODES:
      raise ValueError(f"cache_mode must be one of {_CACHE_MODES}, got {cache_mode!r}")
    if cache_mode == "prefill" and cache_len is None:
      raise ValueError("cache_mode='prefill' needs cache_len")
    if cache_mode == "step" and decoder_positions is None:
      raise ValueError("cache_mode='step' needs decoder_positions")
    length = decoder_input_tokens.shape[1]
    if decoder_positions is None:
      decoder_positions = jnp.broadcast_to(jnp.arange(length), decoder_input_tokens.shape)

    token_embed = nn.Embed(
        cfg.num_embeddings, cfg.emb_dim, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
        embedding_init=_partitioned(_dense_init(), ("vocab", "embed")), name="token_embed")
    # The position table's first axis is left unnamed: it is small and never worth sharding.
    position_embed = nn.Embed(
        cfg.max_len, cfg.emb_dim, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
        embedding_init=_partitioned(_dense_init(), (None, "embed")), name="position_embed")
    x = token_embed(decoder_input_tokens) + position_embed(decoder_positions)
    x = nn.Dropout(cfg.dropout_rate, deterministic=deterministic)(x)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))

    mask = None
    if cache_mode != "step":
      mask = attention_mask(length, decoder_causal_attention, decoder_segment_ids)

    block = DecoderBlock
    policy = _REMAT_POLICIES[cfg.remat_policy]
    if policy is not None and cache_mode is None:
      block = nn.remat(block, policy=policy, prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
      stack = nn.scan(
          block, variable_axes={"params": 0, "cache": 0},
          split_rngs={"params": True, "dropout": True},
          in_axes=(nn.broadcast, nn.broadcast), length=cfg.num_layers,
          metadata_params={nn.PARTITION_NAME: "layers"})
      x, _ = stack(cfg, deterministic, cache_mode, cache_len, name="layers")(
          x, mask, decoder_positions)
    else:
      for i in range(cfg.num_layers):
        layer = block(cfg, deterministic, cache_mode, cache_len, name=f"layers_{i}")
        x = layer(x, mask, decoder_positions)

    if logit_indices is not None:
      x = jnp.take_along_axis(x, logit_indices[:, None, None], axis=1)
    x = _layer_norm(cfg, "final_norm")(x)
    logits = nn.Dense(
        cfg.num_embeddings, use_bias=False, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
        kernel_init=_partitioned(_dense_init(), ("embed", "vocab")), name="logits")(x)
    logits = nn.with_logical_constraint(logits, ("batch", "length", "vocab"))
    return logits.astype(jnp.float32)
