"""The analysis of learned filters: reading them, measuring them, fitting models to them.

Modules (each imports only those above it, and the maths wing :mod:`scalespace_mk.scalespace`):

- :mod:`~scalespace_mk.analysis.filters`: filter files (text, .npy, .npz), the published
  8 master key filters, the shipped filter sets;
- :mod:`~scalespace_mk.analysis.types`: the one home for filter types and reference scales;
- :mod:`~scalespace_mk.analysis.spread`: spread measures (mean, covariance, separability);
- :mod:`~scalespace_mk.analysis.normalize`: the paper's normalisation of a filter;
- :mod:`~scalespace_mk.analysis.fit`: the paper's fitting methods A ... D-joint;
- :mod:`~scalespace_mk.analysis.census`: the vectorised least-squares census of any number
  of filters;
- :mod:`~scalespace_mk.analysis.null`, :mod:`~scalespace_mk.analysis.ceiling`: null models
  named for what they randomise, and their ceilings;
- :mod:`~scalespace_mk.analysis.identify`: which fitted scales the data determine;
- :mod:`~scalespace_mk.analysis.population`: population measures of a layer's filters.
"""
