"""What is checked about a train state before it is saved and after it is restored.

One jitted pass over the state, on the device that holds it, gives: whether
every array is finite, the largest parameter magnitude, and a 32-bit checksum
of every array's bits. Save steps already wait for the device, so this adds
no per-step host sync. The checksums are integer sums modulo 2**32 of a mix of
each element's bits and its index, so they do not depend on how the array is
sharded or in which order a device reduces it: the same state gives the same
checksums on one CPU or on a pod, which is what lets a restore (or
`python -m pause_lm.checkpoints verify`) compare them.
"""

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_GOLDEN = np.uint32(0x9E3779B9)


@dataclasses.dataclass(frozen=True)
class StateReport:
  finite: bool
  max_abs_param: float
  checksums: dict[str, int]  # leaf_name -> checksum


def _mix(x: jax.Array) -> jax.Array:
  """murmur3's 32-bit finaliser: every input bit affects every output bit."""
  x = x ^ (x >> 16)
  x = x * np.uint32(0x85EBCA6B)
  x = x ^ (x >> 13)
  x = x * np.uint32(0xC2B2AE35)
  return x ^ (x >> 16)


def _as_uint32(x: jax.Array) -> jax.Array:
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32)
  bits = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
  # 8-byte types become [..., 2] uint32 words.
  return jax.lax.bitcast_convert_type(x, bits).astype(jnp.uint32)


def array_checksum(x: jax.Array) -> jax.Array:
  """A uint32 checksum of `x`'s bits and their positions (no reshape: no resharding)."""
  bits = _as_uint32(jnp.asarray(x))
  index = jnp.zeros(bits.shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(bits.ndim)):
    index = index + jax.lax.broadcasted_iota(jnp.uint32, bits.shape, axis) * np.uint32(
      stride % 2**32
    )
    stride *= bits.shape[axis]
  return jnp.sum(_mix(bits ^ _mix(index + _GOLDEN)), dtype=jnp.uint32)


def _inspect(state):
  leaves = jax.tree.leaves(state)
  finite = jnp.all(
    jnp.stack(
      [
        jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.array(True)
        for x in leaves
      ]
    )
  )
  params = jax.tree.leaves(state.get('params', {})) if isinstance(state, dict) else []
  max_abs = jnp.max(
    jnp.stack(
      [jnp.max(jnp.abs(x)).astype(jnp.float32) for x in params] or [jnp.zeros((), jnp.float32)]
    )
  )
  checksums = jax.tree.map(array_checksum, state)
  return finite, max_abs, checksums


@functools.lru_cache(maxsize=None)
def _jitted_inspect(mesh: jax.sharding.Mesh | None):
  # Replicated results, so every process of a multi-host run can read them.
  out = None if mesh is None else jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return jax.jit(_inspect, out_shardings=out)


def inspect_state(state: Any) -> StateReport:
  """Finiteness, largest parameter and per-array checksums of a state (one device pass)."""
  shardings = [getattr(x, 'sharding', None) for x in jax.tree.leaves(state)]
  mesh = next((s.mesh for s in shardings if isinstance(s, jax.sharding.NamedSharding)), None)
  finite, max_abs, checksums = jax.device_get(_jitted_inspect(mesh)(state))
  return StateReport(
    finite=bool(finite),
    max_abs_param=float(max_abs),
    checksums={
      leaf_name(path): int(value)
      for path, value in jax.tree_util.tree_flatten_with_path(checksums)[0]
    },
  )


def leaf_name(path) -> str:
  """'opt_state/1/0/mu/token_embed/embedding': the same whether a tree has its
  original containers (optax's named tuples) or was restored without a target."""
  parts = []
  for key in path:
    for attribute in ('key', 'idx', 'name'):
      if hasattr(key, attribute):
        parts.append(str(getattr(key, attribute)))
        break
    else:
      parts.append(str(key))
  return '/'.join(parts)


def unsafe_reason(report: StateReport, max_abs_param: float | None) -> str | None:
  """Why a state must not be saved, or None if it may."""
  if not report.finite:
    return 'the parameters or optimizer state hold NaN or infinity'
  if not math.isfinite(report.max_abs_param):
    return 'the parameters hold NaN or infinity'
  if max_abs_param is not None and report.max_abs_param > max_abs_param:
    return (
      f'the largest parameter magnitude is {report.max_abs_param:.3g}, '
      f'above CheckpointConfig.max_abs_param={max_abs_param:g} (the run '
      'is diverging)'
    )
  return None


def mismatches(recorded: dict[str, int], actual: dict[str, int]) -> list[str]:
  """Names of arrays whose checksum differs from the recorded one (or that are missing)."""
  names = sorted(set(recorded) | set(actual))
  return [name for name in names if recorded.get(name) != actual.get(name)]
