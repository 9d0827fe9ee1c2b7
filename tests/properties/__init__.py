"""Property-based tests (hypothesis) of the kernels, operators and models.

Shared strategies and the hypothesis settings used here live in
:mod:`tests.properties.strategies` (imported by the test modules as ``.strategies``).
"""
