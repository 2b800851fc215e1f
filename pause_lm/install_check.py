"""Fails loudly when two distributions provide the same import package.

`t5` pins `seqio-nightly` and `tfds-nightly`; installed next to `seqio` and
`tensorflow-datasets` they overwrite each other's files, and which code runs depends on install
order. Run after every install (the Makefile does) so a wrong environment never trains.
"""

import importlib.metadata
import sys

WATCHED = ('seqio', 'tensorflow_datasets', 't5', 'jax', 'flax', 'tensorflow')


def duplicated_import_packages(watched=WATCHED):
  """Returns {import package: [distributions]} for every watched package with more than one."""
  owners = importlib.metadata.packages_distributions()
  return {pkg: sorted(set(owners[pkg])) for pkg in watched if len(set(owners.get(pkg, []))) > 1}


def main():
  clashes = duplicated_import_packages()
  if clashes:
    lines = [f'  {pkg}: {", ".join(dists)}' for pkg, dists in clashes.items()]
    sys.exit(
      'These import packages come from more than one distribution:\n'
      + '\n'.join(lines)
      + '\nUninstall the nightly ones (pip uninstall seqio-nightly tfds-nightly) and reinstall '
      't5 with --no-deps, as the Makefile does.'
    )
  print('install check: one distribution per import package:', ', '.join(WATCHED))


if __name__ == '__main__':
  main()
