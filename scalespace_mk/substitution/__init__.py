"""Substitution studies: put idealised depthwise filters into a trained network and measure
what it then decides (``measures``), how much of it returns after BatchNorm re-estimation and
distillation (``recovery``), and the whole study behind ``scalespace-mk substitute``
(``study``)."""
