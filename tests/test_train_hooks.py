"""The trainer's hooks, each alone, with fakes for what they write to."""

import jax.numpy as jnp
import pytest

from pause_lm.training import hooks as train_hooks


class FakeCheckpointer:
  def __init__(self, every: int, latest: int | None = None):
    self.every, self.latest, self.saved = every, latest, []

  def latest_step(self):
    return self.latest

  def should_save(self, step):
    return step % self.every == 0

  def check_background_save(self):
    pass

  def save(self, step, state, train_iter, run_info):
    del state, train_iter, run_info
    self.saved.append(step)
    self.latest = step


class FakeWriter:
  def __init__(self):
    self.scalars = []

  def write_scalars(self, step, scalars):
    self.scalars.append((step, dict(scalars)))


class FakeProgress:
  def __init__(self):
    self.reported = []

  def report(self, step, summary):
    self.reported.append(step)


def _metrics(loss, grad_norm=1.0, tokens=4.0):
  return {
    'loss': jnp.float32(loss),
    'grad_norm': jnp.float32(grad_norm),
    'weighted_tokens': jnp.float32(tokens),
  }


STATE = {'step': jnp.int32(0), 'params': {'w': jnp.ones(2)}}


def _log_hook(buffer, checkpointer, writer, every_steps=2):
  return train_hooks.LogMetrics(
    buffer,
    train_hooks.Throughput(0),
    writer,
    FakeProgress(),
    checkpointer,
    every_steps=every_steps,
    tokens_per_step=8,
    flops_per_step=1.0,
    peak_flops=None,
    extra_metrics=lambda: {'truncated': 0.0},
  )


def test_metrics_are_averaged_over_the_log_interval_with_tokens_summed():
  buffer, writer = train_hooks.MetricsBuffer(), FakeWriter()
  log = _log_hook(buffer, FakeCheckpointer(every=100), writer)
  for step, loss in enumerate([1.0, 3.0, 5.0], start=1):
    buffer.add(step, _metrics(loss))
    log(step, STATE, last=step == 3)
  assert [step for step, _ in writer.scalars] == [2, 3]  # Every 2 steps and the last one.
  assert writer.scalars[0][1]['loss'] == 2.0
  assert writer.scalars[0][1]['weighted_tokens'] == 8.0
  assert writer.scalars[0][1]['truncated'] == 0.0
  assert 'steps_per_sec' in writer.scalars[1][1]  # Timed from the end of step 1.
  assert log.history == writer.scalars


def test_a_non_finite_step_names_itself_and_the_last_good_checkpoint():
  buffer = train_hooks.MetricsBuffer()
  buffer.add(7, _metrics(1.0))
  buffer.add(8, _metrics(float('nan')))
  with pytest.raises(
    train_hooks.NonFiniteError, match=r'Step 8: loss=nan.*last good checkpoint is step 5'
  ):
    buffer.check_finite(last_good_checkpoint=5)


def test_a_checkpoint_is_saved_only_after_its_steps_are_checked_finite():
  buffer, checkpointer = train_hooks.MetricsBuffer(), FakeCheckpointer(every=2, latest=0)
  save = train_hooks.SaveCheckpoint(checkpointer, buffer, train_iter=None, run_info={})
  buffer.add(1, _metrics(1.0))
  save(1, STATE, last=False)
  buffer.add(2, _metrics(float('inf')))
  with pytest.raises(train_hooks.NonFiniteError):
    save(2, STATE, last=False)
  assert checkpointer.saved == [] and save.saved_step == 0


def test_the_last_step_is_saved_even_off_the_interval():
  buffer, checkpointer = train_hooks.MetricsBuffer(), FakeCheckpointer(every=10)
  save = train_hooks.SaveCheckpoint(checkpointer, buffer, train_iter=None, run_info={})
  for step in (1, 2, 3):
    buffer.add(step, _metrics(1.0))
    save(step, STATE, last=step == 3)
  assert checkpointer.saved == [3] and save.saved_step == 3


def test_evaluation_runs_on_its_interval_and_at_the_end_off_the_throughput_clock():
  calls, writer = [], FakeWriter()
  throughput = train_hooks.Throughput(0)
  throughput.started(1, STATE)
  evaluate = train_hooks.Evaluate(
    lambda params, step: calls.append(step) or {'eval/acc': 1.0},
    every_steps=3,
    writer=writer,
    throughput=throughput,
  )
  for step in range(1, 8):
    evaluate(step, STATE, last=step == 7)
  assert calls == [3, 6, 7]
  assert writer.scalars == [(3, {'eval/acc': 1.0}), (6, {'eval/acc': 1.0}), (7, {'eval/acc': 1.0})]
  assert throughput.measure(7) is None  # Restarted at step 7: nothing left to time.


def test_throughput_counts_steps_since_the_clock_started():
  throughput = train_hooks.Throughput(start_step=10)
  assert throughput.measure(11) is None  # The compiling step is never timed.
  throughput.started(11, STATE)
  rate = throughput.measure(15)
  assert rate is not None and rate > 0
