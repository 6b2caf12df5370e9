"""Surrogate models: predict a measured property's mean and uncertainty from parameters.

``surrogates.gp`` fits BoTorch/GPyTorch Gaussian processes (on CUDA when present);
``surrogates.descriptors`` (with ``composition``, ``structure`` and ``graph``) turns
compositions and crystal structures into features; ``surrogates.base`` is the contract and
registry of property surrogates (``gp``, ``rf``, ``gbr``, ``svr``, ``mlp_ensemble``,
``cgcnn``), each exposing a BoTorch model; ``surrogates.metrics`` scores their accuracy and
calibration (see ``docs/materials.md``); ``surrogates.classifier`` learns where
experiments succeed and ``surrogates.phase`` which phase forms where (multi-class Dirichlet
GP classifier). This package imports nothing of sdlab's but :mod:`models`; planners build
on it.
"""
