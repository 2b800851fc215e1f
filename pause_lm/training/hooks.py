"""What the training loop does after each step, as hooks.

The loop in `trainer.train` only steps; metrics, the divergence check, evaluation,
profiling and checkpointing are hooks called as `hook(step, state, last)` after every
step (the T5X actions / clu periodic actions pattern). Each one decides for itself whether
this step is its turn, so each can be tested alone and a caller can add its own.

Host-device syncs stay off the per-step path: per-step metrics wait on the device in a
`MetricsBuffer` until a log or save step fetches them, which is also where a non-finite
loss or gradient is caught, before any checkpoint of the bad state is written.
"""

from collections.abc import Callable
import math
import time
from typing import Any, Protocol

from clu import metric_writers
from clu import periodic_actions
import jax
import numpy as np

from pause_lm.checkpointing import checkpointer as checkpointing
from pause_lm.runtime import console

State = dict[str, Any]
# What a run evaluates: (params, step) -> scalars for the metric writer.
EvalFn = Callable[[Any, int], dict[str, float]]


class NonFiniteError(FloatingPointError):
  """Loss or gradient norm became NaN or infinite."""


class Hook(Protocol):
  def __call__(self, step: int, state: State, last: bool) -> None:
    """Runs after `step`; `last` is the run's final step (end of training or SIGTERM)."""


class MetricsBuffer:
  """Per-step metrics kept on device until a log or save step needs them."""

  def __init__(self):
    self._device: list[tuple[int, dict[str, jax.Array]]] = []
    self._host: list[tuple[int, dict[str, float]]] = []

  def add(self, step: int, metrics: dict[str, jax.Array]) -> None:
    self._device.append((step, metrics))

  def check_finite(self, last_good_checkpoint: int | None) -> None:
    """Moves metrics to the host; raises on the first non-finite step."""
    fetched = jax.device_get(self._device)
    self._device = []
    for step, metrics in fetched:
      metrics = {k: float(v) for k, v in metrics.items()}
      if not (math.isfinite(metrics['loss']) and math.isfinite(metrics['grad_norm'])):
        raise NonFiniteError(
          f'Step {step}: loss={metrics["loss"]}, grad_norm={metrics["grad_norm"]}. '
          'Training stopped without saving this state; the last good checkpoint is step '
          f'{last_good_checkpoint}. Lower the learning rate (or raise warmup), then '
          'restart: the run resumes from that checkpoint.'
        )
      self._host.append((step, metrics))

  def summarize(self) -> dict[str, float]:
    """Means since the last summary (token counts are summed)."""
    rows = [m for _, m in self._host]
    self._host = []
    summary = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    summary['weighted_tokens'] = float(sum(r['weighted_tokens'] for r in rows))
    return summary


class Throughput:
  """Steps per second of training alone: compilation and evaluation are left out."""

  def __init__(self, start_step: int):
    self._since: tuple[float | None, int] = (None, start_step)

  def started(self, step: int, state: State) -> None:
    """Starts the clock after the first (compiling) step has finished."""
    if self._since[0] is None:
      jax.block_until_ready(state['step'])
      self._since = (time.perf_counter(), step)

  def restart(self, step: int) -> None:
    """Leaves out the time since the last measurement (an evaluation, say)."""
    self._since = (time.perf_counter(), step)

  def measure(self, step: int) -> float | None:
    """Steps per second since the last measurement; None if no step was timed."""
    since, since_step = self._since
    now = time.perf_counter()
    self._since = (now, step)
    if since is None or step <= since_step:
      return None
    return (step - since_step) / (now - since)


class LogMetrics:
  """Every `every_steps` and at the end: checks, averages and writes the step metrics."""

  def __init__(
    self,
    buffer: MetricsBuffer,
    throughput: Throughput,
    writer: metric_writers.MetricWriter,
    progress: console.ProgressReporter,
    checkpointer: checkpointing.Checkpointer,
    *,
    every_steps: int,
    tokens_per_step: int,
    flops_per_step: float,
    peak_flops: float | None,
    extra_metrics: Callable[[], dict[str, float]] = dict,
  ):
    self._buffer, self._throughput = buffer, throughput
    self._writer, self._progress, self._checkpointer = writer, progress, checkpointer
    self._every_steps = every_steps
    self._tokens_per_step, self._flops_per_step = tokens_per_step, flops_per_step
    self._peak_flops = peak_flops
    self._extra_metrics = extra_metrics
    self.history: list[tuple[int, dict[str, float]]] = []

  def __call__(self, step: int, state: State, last: bool) -> None:
    self._throughput.started(step, state)
    if step % self._every_steps and not last:
      return
    self._buffer.check_finite(self._checkpointer.latest_step())
    summary = self._buffer.summarize()
    summary.update(self._extra_metrics())
    steps_per_sec = self._throughput.measure(step)
    if steps_per_sec is not None:
      summary['steps_per_sec'] = steps_per_sec
      summary['tokens_per_sec'] = steps_per_sec * self._tokens_per_step
      if self._peak_flops:
        summary['mfu'] = (
          steps_per_sec * self._flops_per_step / (self._peak_flops * jax.device_count())
        )
    self._writer.write_scalars(step, summary)
    self.history.append((step, summary))
    self._progress.report(step, summary)


class Evaluate:
  """Every `every_steps` and at the end: evaluates the parameters, off the throughput clock."""

  def __init__(
    self,
    evaluate: EvalFn,
    every_steps: int,
    writer: metric_writers.MetricWriter,
    throughput: Throughput,
  ):
    self._evaluate, self._every_steps = evaluate, every_steps
    self._writer, self._throughput = writer, throughput

  def __call__(self, step: int, state: State, last: bool) -> None:
    if step % self._every_steps and not last:
      return
    self._writer.write_scalars(step, self._evaluate(state['params'], step))
    self._throughput.restart(step)


class Profile:
  """Every `every_steps`: a profiler trace in the run folder (clu's periodic action)."""

  def __init__(self, logdir: str, every_steps: int):
    self._action = periodic_actions.Profile(logdir=logdir, every_steps=every_steps, every_secs=None)

  def __call__(self, step: int, state: State, last: bool) -> None:
    del state, last
    self._action(step)


class SaveCheckpoint:
  """At the configured interval and at the end: saves a state checked to be finite."""

  def __init__(
    self,
    checkpointer: checkpointing.Checkpointer,
    buffer: MetricsBuffer,
    train_iter: Any,
    run_info: dict[str, Any],
  ):
    self._checkpointer, self._buffer = checkpointer, buffer
    self._train_iter, self._run_info = train_iter, run_info
    self.saved_step = checkpointer.latest_step()

  def __call__(self, step: int, state: State, last: bool) -> None:
    self._checkpointer.check_background_save()
    if not (self._checkpointer.should_save(step) or last):
      return
    self._buffer.check_finite(self._checkpointer.latest_step())
    self._checkpointer.save(step, state, self._train_iter, self._run_info)
    self.saved_step = step
