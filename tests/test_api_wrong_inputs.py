"""The Python API given what it does not take: an fpr outside (0, 1), complex numbers, a list of arrays for
several series, and arguments of the wrong type; each a clear error naming the argument, never one from deep
inside."""

from __future__ import annotations

import numpy as np
import pytest

from normalcy.errors import InputError

FPR_RANGE = r"fpr must be a number between 0 and 1, both excluded \(got nan\)"


@pytest.mark.parametrize("name", ["pca", "knn", "auto"])
def test_a_series_detectors_fpr_of_nan_says_the_range(name: str) -> None:
    """``create("pca", fpr=nan)`` said "fpr: input should be less than 1 (got NaN)" (NaN fails every comparison)."""
    from normalcy.series.registry import create

    with pytest.raises(InputError, match=f"^detector {name}: {FPR_RANGE}$"):
        create(name, fpr=float("nan"))


def test_an_image_detectors_fpr_out_of_range_says_the_range() -> None:
    from normalcy.detectors.registry import create

    with pytest.raises(InputError, match=f"^detector gaussian: {FPR_RANGE}$"):
        create("gaussian", fpr=float("nan"))
    with pytest.raises(InputError, match=r"detector patchcore: fpr must be .* excluded \(got inf\)"):
        create("patchcore", fpr=float("inf"))


@pytest.mark.parametrize("name", ["gaussian", "knn", "iforest", "ecod", "ensemble"])
def test_a_vector_detectors_fpr_of_nan_says_the_range(name: str) -> None:
    """As the command line says it; a value that is no number is still named by its type."""
    from normalcy.vectors.registry import VECTOR_DETECTORS, create

    with pytest.raises(InputError, match=f"^detector {name}: {VECTOR_DETECTORS[name].__name__}.{FPR_RANGE}$"):
        create(name, float("nan"), 0)
    with pytest.raises(ValueError, match=r"\.fpr must be a number between 0 and 1, both excluded \(got 2\)"):
        VECTOR_DETECTORS[name](fpr=2).fit(np.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"expected a finite number in \(0\.0, 1\.0\), got None"):
        VECTOR_DETECTORS[name](fpr=None).fit(np.zeros((5, 2)))
