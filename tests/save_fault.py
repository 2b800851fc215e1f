"""Imported by a gin binding in tests: checkpoint step 2's final write fails as on a full disk.

Orbax writes a step to a temporary folder in a background thread and renames it when complete;
this makes that rename raise ENOSPC for step 2, so the failure happens where a real one does.
"""

import errno

from orbax.checkpoint._src.path import async_path

_rename = async_path.rename


async def _failing_rename(src, dst):
  if dst.name == '2':
    raise OSError(errno.ENOSPC, 'No space left on device', str(dst))
  return await _rename(src, dst)


async_path.rename = _failing_rename
