"""The check before every save: only a finite state with bounded parameters is written.

Because nothing else is ever saved, the newest checkpoint is always the newest good one, and
Orbax's keep-latest-N policy can never delete it in favour of diverged ones
(docs/reliability.md, "Only good state is saved").
"""

from typing import Any

from pause_lm.checkpointing import errors
from pause_lm.checkpointing import integrity


class SaveGuard:
  """Refuses a state that is not finite or whose parameters exceed `max_abs_param`."""

  def __init__(self, max_abs_param: float | None):
    self._max_abs_param = max_abs_param

  def check(self, step: int, state: Any, last_good: int | None) -> integrity.StateReport:
    """Returns the state's report (its checksums are saved with it).

    Raises:
      UnsafeStateError: The state must not be saved; names `last_good`, the step a restart
        resumes from.
    """
    report = integrity.inspect_state(state)
    problem = integrity.unsafe_reason(report, self._max_abs_param)
    if problem:
      raise errors.UnsafeStateError(
        f'Step {step}: {problem}. Training stopped without saving this '
        f'state; the last good checkpoint is step {last_good}. '
        'Lower the learning rate (or raise warmup), then restart: the run '
        'resumes from that checkpoint.'
      )
    return report
