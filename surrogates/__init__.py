"""Surrogate models: predict a measured property's mean and uncertainty from parameters.

``surrogates.gp`` fits BoTorch/GPyTorch Gaussian processes (on CUDA when present);
``surrogates.classifier`` learns where experiments succeed and ``surrogates.phase`` which
phase forms where (multi-class Dirichlet GP classifier). This
package imports nothing of sdlab's but :mod:`models`; planners build on it.
"""
