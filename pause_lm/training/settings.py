"""What `trainer.train` is called with: its parameters, declared once, as `TrainSettings`.

Run files bind them by name (`train.model_dir = %MODEL_DIR`, `train.model = @ModelConfig()`) and
saved config.gin files name them the same way, so `train` keeps them as keyword parameters; its
signature is made from this dataclass (`keyword_parameters`). Everything else that needs them
(the checks in `settings_check`, the ahead-of-time compile in `aot`, the trainer's own steps)
reads the one `TrainSettings` object instead of picking the names out of gin or an argument list.
"""

from collections.abc import Callable
import dataclasses
import functools
import inspect
from typing import Any

import gin
import jax

from pause_lm.checkpointing import checkpointer as checkpointing
from pause_lm.model import transformer as model_lib
from pause_lm.runtime import gin_utils
from pause_lm.training import hooks as train_hooks
from pause_lm.training import optimizer as optimizer_lib

# Builds the evaluation a run does every EVAL_EVERY_STEPS steps, from (task, model config,
# sequence length, model_dir); `evaluation.periodic_evaluator` is one.
MakeEvaluator = Callable[[str, model_lib.ModelConfig, int, str], train_hooks.EvalFn]


@dataclasses.dataclass(frozen=True)
class TrainSettings:
  """One training run's settings; gin binds each as `train.<field>`.

  Attributes:
    model_dir: Output folder: checkpoints/, TensorBoard files, config.gin. A
      folder that already holds checkpoints is resumed from the latest.
    task: Registered SeqIO task to train on.
    train_steps: Total optimizer steps (a resumed run continues to it).
    sequence_length: Tokens per example.
    batch_size: Global batch size in examples, over all processes.
    model: The decoder; an unset `num_embeddings` is sized from the task.
    optimizer: The update rule and its schedule (`optimizer.create_optimizer`).
    mesh: The device mesh (`sharding.create_mesh`).
    checkpoint: When checkpoints are written and how many are kept.
    seed: Seeds parameter initialisation and dropout.
    data_seed: Seeds the data order; defaults to `seed`.
    pack: Pack several examples per row (finetuning on short examples).
    init_checkpoint: Start from these parameters (a MODEL_DIR, its
      checkpoints/ folder or one step folder) with a fresh optimizer at step
      0. Ignored when model_dir already holds checkpoints (that is a resume).
    z_loss: Coefficient of the z-loss; 0 disables it.
    num_microbatches: Split each batch into this many sequential microbatches
      whose gradients are summed (same result, less activation memory).
    log_every_steps: Write metrics every this many steps.
    peak_flops_per_device: Peak FLOP/s of one device, for MFU. Looked up from
      the device kind when unset (accelerators only).
    profile_every_steps: Capture a profiler trace every this many steps.
    eval_every_steps: Evaluate every this many steps and at the end; None never does.
    make_evaluator: Builds that evaluation (`train.make_evaluator =
      @periodic_evaluator` in gin/stdft.gin); needed when eval_every_steps is set.
  """

  model_dir: str = gin.REQUIRED
  task: str = gin.REQUIRED
  train_steps: int = gin.REQUIRED
  sequence_length: int = gin.REQUIRED
  batch_size: int = gin.REQUIRED
  model: model_lib.ModelConfig = gin.REQUIRED
  optimizer: optimizer_lib.Optimizer = gin.REQUIRED
  mesh: jax.sharding.Mesh = gin.REQUIRED
  checkpoint: checkpointing.CheckpointConfig = checkpointing.CheckpointConfig()
  seed: int = 0
  data_seed: int | None = None
  pack: bool = False
  init_checkpoint: str | None = None
  z_loss: float = 0.0
  num_microbatches: int = 1
  log_every_steps: int = 100
  peak_flops_per_device: float | None = None
  profile_every_steps: int | None = None
  eval_every_steps: int | None = None
  make_evaluator: MakeEvaluator | None = None

  @property
  def order_seed(self) -> int:
    """The seed of the data order: `data_seed`, else `seed`."""
    return self.seed if self.data_seed is None else self.data_seed

  @classmethod
  def from_gin(cls) -> 'TrainSettings':
    """The settings the parsed gin config gives `train` (references such as `@ModelConfig()`
    evaluated), for tools that look at a run without starting it (`aot`).

    Raises:
      MissingSettingError: A parameter without a default is not bound.
    """
    settings = cls(**gin.get_bindings('train'))
    missing = [f.name for f in dataclasses.fields(cls) if getattr(settings, f.name) is gin.REQUIRED]
    if missing:
      raise gin_utils.MissingSettingError(
        'Required gin settings are not set:\n'
        + '\n'.join(f'  train.{m}: set it with --gin_bindings="train.{m} = ...".' for m in missing)
      )
    return settings


def keyword_parameters(run: Callable[[TrainSettings], Any]) -> Callable[..., Any]:
  """Makes `run(settings)` callable as `run(model_dir=..., task=..., ...)`.

  The wrapper's signature is TrainSettings' fields with their defaults, which is what gin reads
  (through `__signature__`) to know the parameters it may bind, to report unset `gin.REQUIRED`
  ones and to suggest the name a misspelt binding meant.
  """
  parameters = [
    inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=f.default)
    for f in dataclasses.fields(TrainSettings)
  ]
  signature = inspect.Signature(
    parameters, return_annotation=inspect.signature(run).return_annotation
  )

  @functools.wraps(run)
  def wrapper(*args, **kwargs):
    return run(TrainSettings(*args, **kwargs))

  wrapper.__signature__ = signature
  # gin follows `__wrapped__` to the innermost function for the parameter names it accepts;
  # that one takes the dataclass, so the chain stops here.
  del wrapper.__wrapped__
  return wrapper
