"""The scale-space maths: discrete kernels, difference operators, filter models, sympy.

Modules (imports run top to bottom; nothing here imports the other wings):

- :mod:`~scalespace_mk.scalespace.kernels`: the discrete analogue of the Gaussian and four
  other discretisations, numpy or torch, with the exact scale gradient;
- :mod:`~scalespace_mk.scalespace.operators`: central and half-grid differences, the
  five-point Laplacian, separable application;
- :mod:`~scalespace_mk.scalespace.models`: the idealised models of the 8 master key types;
- :mod:`~scalespace_mk.scalespace.symbolic`: sympy derivations of stencils, variances,
  spreads and norms;
- :mod:`~scalespace_mk.scalespace.bank`: banks of model kernels over many scales, as files;
- :mod:`~scalespace_mk.scalespace.image`: the scale-space of images (smoothing, scale-
  normalised derivatives, N-jet, Laplacian, DoG), numpy or torch.
"""
