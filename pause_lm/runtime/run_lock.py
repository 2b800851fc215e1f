"""One run per MODEL_DIR: a lock file that a second run refuses to start past.

Two runs writing one MODEL_DIR (a double launch, a retry script) overwrite
each other's checkpoints and mix their logs, and both exit 0. So process 0
creates `MODEL_DIR/run.lock` before anything else is written there, with the
host, pid, start time and command of its holder, and deletes it on exit
(exceptions included). A second run stops at once and names the holder.

A lock left by a run that is provably gone (same host, pid no longer running,
e.g. after kill -9) is taken over with a warning. Any other lock stays until
its holder exits or someone breaks it deliberately: `RunLock.break_lock =
True` (`--gin.RunLock.break_lock=True`), for a holder on another host that is
known to be dead. See docs/reliability.md for what the lock can and cannot
guarantee on object stores.
"""

from collections.abc import Iterator
import contextlib
import dataclasses
import datetime
import errno
import json
import os
import socket
import sys

from absl import logging
from etils import epath
import gin
import jax
import numpy as np

from pause_lm.runtime import run_dir

LOCK_FILENAME = 'run.lock'


class RunLockedError(RuntimeError):
  """MODEL_DIR is held by another run."""


@dataclasses.dataclass(frozen=True)
class Holder:
  """Who holds a lock: enough to find the process and to tell runs apart."""

  host: str
  pid: int
  start_time: str
  command: str

  @classmethod
  def this_process(cls) -> 'Holder':
    return cls(
      host=socket.gethostname(),
      pid=os.getpid(),
      start_time=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      command=' '.join(sys.argv),
    )

  def describe(self) -> str:
    return f'pid {self.pid} on host {self.host}, started {self.start_time}, command: {self.command}'

  def is_provably_gone(self) -> bool:
    """True only for a holder on this host whose pid no longer runs."""
    if self.host != socket.gethostname():
      return False
    try:
      os.kill(self.pid, 0)
    except ProcessLookupError:
      return True
    except PermissionError:  # Runs, as another user.
      return False
    return False


def _is_url(path: epath.Path) -> bool:
  return '://' in os.fspath(path)


@gin.configurable
class RunLock:
  """The MODEL_DIR lock of this process (use `hold`, not this, from a trainer).

  Attributes:
    path: The lock file.
  """

  def __init__(self, model_dir: epath.PathLike, break_lock: bool = False):
    """Creates (does not take) the lock of `model_dir`.

    Args:
      model_dir: The run's output folder.
      break_lock: Take the lock even if another run holds it. Only for a
        holder known to be gone (e.g. a dead host): two live runs on one
        MODEL_DIR destroy each other's checkpoints.
    """
    self.path = epath.Path(model_dir) / LOCK_FILENAME
    self._break_lock = break_lock
    self._holder = Holder.this_process()
    self._held = False

  def acquire(self) -> None:
    """Takes the lock, or raises RunLockedError naming its holder.

    Raises:
      RunLockedError: Another run holds it.
      run_dir.FolderNotWritableError: MODEL_DIR is a file or cannot be written.
    """
    # The first write to MODEL_DIR: a folder that cannot be one is named here, before any work.
    run_dir.ensure_writable_folder(self.path.parent, 'MODEL_DIR')
    if self._try_create():
      return
    holder = self._read_holder()
    if holder is None:
      # Deleted between our attempt and the read: its holder just exited.
      if self._try_create():
        return
      holder = self._read_holder()
    if holder is not None and holder.is_provably_gone():
      logging.warning(
        'Taking over the lock %s of a run that is gone (%s).', self.path, holder.describe()
      )
    elif self._break_lock:
      logging.warning(
        'Breaking the lock %s held by %s (RunLock.break_lock).',
        self.path,
        holder.describe() if holder else 'unknown',
      )
    else:
      raise RunLockedError(
        f'{self.path.parent} is in use by another run: '
        f'{holder.describe() if holder else "unreadable lock file"}.\n'
        "Two runs on one MODEL_DIR overwrite each other's checkpoints. Wait "
        'for that run to end or stop it, or use another MODEL_DIR. If it is '
        'gone (e.g. its host died), rerun with '
        '--gin.RunLock.break_lock=True.'
      )
    self.path.unlink(missing_ok=True)
    if not self._try_create():
      raise RunLockedError(
        f'Another run took {self.path} while this one was taking over a '
        f'stale lock: {self._read_holder()}.'
      )

  def release(self) -> None:
    """Deletes the lock file if it is still ours."""
    if not self._held:
      return
    self._held = False
    if self._read_holder() == self._holder:
      self.path.unlink(missing_ok=True)

  def _try_create(self) -> bool:
    text = json.dumps(dataclasses.asdict(self._holder), indent=2)
    if _is_url(self.path):
      # Object stores have no create-exclusive through epath: check, write and
      # read back (a small race window remains; see docs/reliability.md).
      if self.path.exists():
        return False
      self.path.write_text(text)
      self._held = self._read_holder() == self._holder
      return self._held
    try:
      fd = os.open(os.fspath(self.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, 'w') as f:
      f.write(text)
    self._held = True
    return True

  def _read_holder(self) -> Holder | None:
    try:
      return Holder(**json.loads(self.path.read_text()))
    except FileNotFoundError:
      return None
    except (ValueError, TypeError) as e:
      logging.warning('Cannot read the lock file %s: %s', self.path, e)
      return None
    except OSError as e:
      if e.errno == errno.ENOENT:
        return None
      raise


# What process 0 tells the others when it cannot take the lock (an index, broadcast).
_REFUSALS = (RunLockedError, run_dir.FolderNotWritableError)


def hold(model_dir: epath.PathLike) -> RunLock | None:
  """Takes MODEL_DIR's lock on process 0; every process raises if it is held.

  Returns:
    The held lock on process 0 (release it when the run ends), else None.

  Raises:
    RunLockedError: Another run holds it.
    run_dir.FolderNotWritableError: MODEL_DIR is a file or cannot be written.
  """
  lock, error = None, None
  if jax.process_index() == 0:
    lock = RunLock(model_dir)
    try:
      lock.acquire()
    except _REFUSALS as e:
      if jax.process_count() == 1:
        raise
      error = e
  if jax.process_count() > 1:
    # Other processes must not write (checkpoint shards) unless 0 holds it, and must not wait
    # for a process 0 that stopped: each learns why, and stops too.
    # pylint: disable-next=g-import-not-at-top
    from jax.experimental import multihost_utils

    refusal = next((i for i, kind in enumerate(_REFUSALS) if isinstance(error, kind)), -1)
    refusal = int(multihost_utils.broadcast_one_to_all(np.int32(refusal)))
    if error is not None:
      raise error
    if refusal == _REFUSALS.index(RunLockedError):
      raise RunLockedError(f'{model_dir} is in use by another run (see the log of process 0).')
    if refusal >= 0:
      raise run_dir.FolderNotWritableError(
        f'MODEL_DIR={model_dir} cannot be written by process 0 (its log says why).'
      )
  return lock


@contextlib.contextmanager
def held(model_dir: epath.PathLike) -> Iterator[None]:
  """Holds MODEL_DIR's lock (`hold`) for the body, released however the body ends."""
  lock = hold(model_dir)
  try:
    yield
  finally:
    if lock is not None:
      lock.release()
