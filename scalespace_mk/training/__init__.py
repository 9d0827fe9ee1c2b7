"""Training networks: image datasets, augmentation and the resumable training loop.

Modules: :mod:`~scalespace_mk.training.datasets` (image folders, ImageNet, CIFAR, synthetic
data and their loaders), :mod:`~scalespace_mk.training.augment` (batched augmentation,
mixup/cutmix, soft-target loss) and :mod:`~scalespace_mk.training.train` (the loop, its
configuration and checkpoints). This wing imports :mod:`scalespace_mk.networks`; nothing in
the other wings imports it.
"""
