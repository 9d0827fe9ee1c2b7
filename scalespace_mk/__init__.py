"""scalespace_mk: scale-space models of the master key filters of depthwise-separable CNNs."""

__version__ = "0.1.0"
