"""Surrogate models: predict a measured property's mean and uncertainty from parameters.

``surrogates.gp`` fits BoTorch/GPyTorch Gaussian processes (on CUDA when present). This
package imports nothing of sdlab's but :mod:`models`; planners build on it.
"""
