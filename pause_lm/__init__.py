"""pause-lm: decoder-only language models trained and evaluated with <pause> tokens.

The top level holds the commands (`python -m pause_lm.train`, ...); the library lives in
subpackages by concern (README, "Layout"; docs/api.md lists the public import paths). Import
paths of earlier releases keep working with a DeprecationWarning (`runtime/compat.py`).
"""

from pause_lm.runtime import compat as _compat

_compat.install()
