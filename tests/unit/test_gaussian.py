"""The one Ledoit-Wolf Gaussian of the statistics baseline and the mahalanobis scorer,
against scikit-learn's LedoitWolf."""

import numpy as np
import pytest
from sklearn.covariance import LedoitWolf

from estm_ref.gaussian import Gaussian


@pytest.mark.parametrize("n, p", [(8, 12), (40, 6), (200, 3)])
def test_fit_and_score_match_sklearn_ledoit_wolf(n, p):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, p)) * rng.uniform(0.2, 3.0, size=p) + rng.normal(size=p)
    test = rng.normal(size=(7, p)) * 2
    fitted, ref = Gaussian.fit(x), LedoitWolf().fit(x)
    assert fitted.shrinkage == pytest.approx(ref.shrinkage_, rel=1e-9)
    np.testing.assert_allclose(fitted.mean, ref.location_, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.linalg.inv(fitted.precision), ref.covariance_, rtol=1e-9,
                               atol=1e-12)
    np.testing.assert_allclose(fitted.score(test), ref.mahalanobis(test), rtol=1e-8)


def test_one_vector_has_no_covariance():
    with pytest.raises(ValueError, match="at least 2 vectors, got 1"):
        Gaussian.fit(np.ones((1, 4)))
