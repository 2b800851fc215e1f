"""The environment has one distribution per import package (t5 must not bring nightlies)."""

from pause_lm import install_check


def test_one_distribution_per_import_package():
  assert install_check.duplicated_import_packages() == {}


def test_t5_metrics_and_preprocessors_import():
  from t5.data import preprocessors  # pylint: disable=g-import-not-at-top
  from t5.evaluation import metrics  # pylint: disable=g-import-not-at-top

  assert metrics.squad([['the cat']], ['a cat'])['em'] == 100.0
  assert callable(preprocessors.reduce_concat_tokens)
