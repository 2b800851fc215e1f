"""Loading only a checkpoint's parameters (INIT_CHECKPOINT), exactly or deliberately in part.

By default the checkpoint must hold exactly the model's parameters, so a wrong model file
cannot silently drop or invent layers (docs/reliability.md, "Warm starts match exactly").
"""

from collections.abc import Callable
import dataclasses
from typing import Any

from absl import logging
from etils import epath
from flax import traverse_util
import gin
import jax
import orbax.checkpoint as ocp

from pause_lm.checkpointing import errors
from pause_lm.checkpointing import resume_checks
from pause_lm.checkpointing import step_folder
from pause_lm.checkpointing import verified_read


@gin.configurable
@dataclasses.dataclass(frozen=True)
class WarmStartConfig:
  """How INIT_CHECKPOINT must fit the model.

  Attributes:
    allow_partial: By default the checkpoint must hold exactly the model's
      parameters (names and shapes), so a wrong model file cannot silently
      drop or invent layers. True loads every parameter whose name and shape
      match; one saved smaller along some axes (e.g. an embedding that gains
      rows) fills the leading block of the fresh one; everything else keeps
      its fresh initial value. Every difference is logged.
  """

  allow_partial: bool = False


def load_params(
  path: epath.PathLike, abstract_params: Any, initial_params: Callable[[], Any] | None = None
) -> Any:
  """Loads only the parameters of a checkpoint (for finetuning, evaluation and export).

  The parameters are verified against the step's recorded checksums, as a resume verifies
  them: a damaged step is never loaded. `path` naming a run falls back to its newest intact
  step; naming one step, a damaged one is refused (`verified_read`).

  Args:
    path: A MODEL_DIR, its checkpoints/ folder, or one step folder.
    abstract_params: ShapeDtypeStructs with shardings for the parameters.
    initial_params: Makes fresh parameters; needed for a partial load
      (`WarmStartConfig.allow_partial`).

  Returns:
    The parameters, sharded as `abstract_params` says.

  Raises:
    CheckpointMismatchError: The parameters do not fit the model (and no partial load).
    DamagedCheckpointError: No step `path` names is intact.
  """
  read = lambda step_dir: load_step_params(step_dir, abstract_params, initial_params)
  return verified_read.read_newest_intact(path, read)[1]


def load_step_params(
  step_dir: epath.Path, abstract_params: Any, initial_params: Callable[[], Any] | None = None
) -> Any:
  """`load_params` of exactly one step folder, for readers that choose the step themselves
  (through `verified_read`): raises DamagedCheckpointError instead of falling back."""
  saved = resume_checks.shapes(step_folder.param_metadata(step_dir))
  wanted = resume_checks.shapes(abstract_params)
  differences = resume_checks.differences(saved, wanted)
  if differences and not WarmStartConfig().allow_partial:
    raise errors.CheckpointMismatchError(
      f'The checkpoint at {step_dir} does not fit this model '
      f'({len(differences)} difference(s)):\n  '
      + '\n  '.join(differences[:20])
      + ('\n  ...' if len(differences) > 20 else '')
      + '\nUse the model gin file (and NUM_EMBEDDINGS) it was trained with. '
      'For a deliberate partial load, set '
      '--gin.WarmStartConfig.allow_partial=True.'
    )
  if not differences:
    params = _restore_params(step_dir, abstract_params)
    logging.info('Loaded parameters from %s.', step_dir)
    return params
  if initial_params is None:
    raise ValueError('A partial INIT_CHECKPOINT load needs fresh parameters.')
  for line in differences:
    logging.warning('Partial INIT_CHECKPOINT load from %s: %s', step_dir, line)
  return _load_partial(step_dir, abstract_params, saved, wanted, initial_params)


def _restore_params(step_dir: epath.Path, abstract_params: Any) -> Any:
  """The saved parameters named in `abstract_params`, shaped and sharded as it says, verified
  against the step's checksums."""
  target = {'params': abstract_params}
  try:
    restored = ocp.PyTreeCheckpointer().restore(
      step_dir / step_folder.STATE,
      args=ocp.args.PyTreeRestore(
        item=target,
        restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True,
      ),
    )
  except Exception as e:  # pylint: disable=broad-except
    raise errors.unreadable(step_dir, e) from e
  verified_read.verify(step_dir, {'params': restored['params']})
  return restored['params']


def _load_partial(
  step_dir: epath.Path,
  abstract_params: Any,
  saved: dict[str, tuple[int, ...]],
  wanted: dict[str, tuple[int, ...]],
  initial_params: Callable[[], Any],
) -> Any:
  """`load_params` with WarmStartConfig.allow_partial: see its docstring."""
  flat_abstract = traverse_util.flatten_dict(abstract_params)
  target = _loadable(flat_abstract, saved, wanted)
  restored = traverse_util.flatten_dict(
    _restore_params(step_dir, traverse_util.unflatten_dict(target))
  )
  fresh = traverse_util.flatten_dict(initial_params())
  for key, value in restored.items():
    fresh[key] = _fill(fresh[key], value)
  logging.info(
    'Loaded %d of %d parameter arrays from %s (partial load).',
    len(restored),
    len(flat_abstract),
    step_dir,
  )
  return traverse_util.unflatten_dict(fresh)


def _loadable(
  flat_abstract: dict[tuple[str, ...], Any],
  saved: dict[str, tuple[int, ...]],
  wanted: dict[str, tuple[int, ...]],
) -> dict[tuple[str, ...], Any]:
  """What to restore of each saved parameter: all of it if its shape matches; if it is smaller
  along some axes, all of it onto one device (it fills a block of the fresh one); else nothing."""
  host = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = {}
  for key, abstract in flat_abstract.items():
    name = ''.join(f"['{k}']" for k in key)
    if name not in saved:
      continue
    if saved[name] == wanted[name]:
      target[key] = abstract
    elif len(saved[name]) == len(wanted[name]) and all(
      a <= b for a, b in zip(saved[name], wanted[name])
    ):
      target[key] = jax.ShapeDtypeStruct(saved[name], abstract.dtype, sharding=host)
  return target


def _fill(fresh: jax.Array, value: jax.Array) -> jax.Array:
  """`value` if it has `fresh`'s shape, else `fresh` with its leading block replaced by it."""
  if value.shape == fresh.shape:
    return value
  block = tuple(slice(0, d) for d in value.shape)
  return jax.jit(lambda f, v: f.at[block].set(v), out_shardings=fresh.sharding)(
    fresh, jax.device_put(value, fresh.sharding)
  )
