"""Hypothesis strategies and settings shared by the property tests.

Settings
--------
Two profiles are registered: ``"scalespace-dev"`` (random examples, no deadline, printed
reproduction blobs) and ``"scalespace-ci"`` (the same, derandomised so that CI runs are
repeatable). :data:`PROPERTY` is a ``settings`` object built from the profile that matches
the environment (``CI`` set -> CI profile); the property tests use it as a decorator, so
they behave the same whichever global profile ``tests/conftest.py`` loaded. ``max_examples``
is kept moderate (:data:`MAX_EXAMPLES`) so that the whole property suite runs in well under
a minute on two cores.

Strategies
----------
``sigmas(lo, hi)``
    Standard deviations in ``[lo, hi]`` (finite floats, no NaN), with the end points and a
    few round values favoured by hypothesis' own shrinking.
``methods()``
    One of :data:`scalespace_mk.scalespace.kernels.METHODS`.
``distinct_signals(n_min, n_max)``
    1-D float64 arrays whose values are a random permutation of ``0 .. n - 1`` scaled by a
    random positive factor: all values distinct, so every local extremum is strict.
``random_arrays(max_dims)``
    float64 arrays of shape ``[..., K]`` (K >= 3) with entries in [-10, 10].
"""

from __future__ import annotations

import os

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from scalespace_mk.scalespace.kernels import METHODS

__all__ = [
    "MAX_EXAMPLES",
    "PROPERTY",
    "distinct_signals",
    "methods",
    "random_arrays",
    "sigmas",
]

#: examples per property (moderate: the property suite stays < 60 s on 2 cores)
MAX_EXAMPLES = 25

_COMMON = dict(
    deadline=None,
    print_blob=True,
    max_examples=MAX_EXAMPLES,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("scalespace-dev", **_COMMON)
settings.register_profile("scalespace-ci", derandomize=True, **_COMMON)

#: decorator applied to every property test
PROPERTY = settings(
    settings.get_profile("scalespace-ci" if os.environ.get("CI") else "scalespace-dev")
)


def sigmas(
    lo: float = 0.0, hi: float = 10.0, *, min_positive: float | None = None
) -> st.SearchStrategy[float]:
    """Standard deviations in ``[lo, hi]`` (finite, no NaN).

    ``min_positive``: if given, positive values below it are not drawn (0 still is when
    ``lo == 0``). The sampled-Gaussian formulas divide by ``sigma**2``, which underflows for
    ``sigma < ~1e-162``; that range is tested on its own in ``tests/test_kernels.py``.
    """
    values = st.floats(min_value=lo, max_value=hi, allow_nan=False, allow_infinity=False)
    if min_positive is None:
        return values
    above = st.floats(
        min_value=max(lo, min_positive), max_value=hi, allow_nan=False, allow_infinity=False
    )
    return st.one_of(st.just(lo), above) if lo == 0.0 else above


def methods() -> st.SearchStrategy[str]:
    """One of the five 1-D discretisations of the Gaussian."""
    return st.sampled_from(METHODS)


@st.composite
def distinct_signals(draw, n_min: int = 32, n_max: int = 96) -> np.ndarray:
    """A 1-D signal with pairwise distinct values (a scaled random permutation)."""
    n = draw(st.integers(min_value=n_min, max_value=n_max))
    perm = draw(st.permutations(list(range(n))))
    scale = draw(st.floats(min_value=0.1, max_value=10.0))
    return np.asarray(perm, dtype=np.float64) * scale


def random_arrays(max_dims: int = 2) -> st.SearchStrategy[np.ndarray]:
    """float64 arrays of shape ``[..., K]`` with ``K >= 3`` and entries in [-10, 10]."""
    shapes = hnp.array_shapes(min_dims=1, max_dims=max_dims, min_side=3, max_side=12)
    elements = st.floats(min_value=-10.0, max_value=10.0, allow_nan=False, width=64)
    return hnp.arrays(np.float64, shapes, elements=elements)
