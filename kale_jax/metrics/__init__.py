"""Sample-quality metrics.

  mmd2(x, y, bandwidths=None)   unbiased squared MMD, Gaussian-mixture kernel (kale_jax.metrics.mmd)
  mmd2_noise(ref, bandwidths)   MMD^2's standard deviation between two true samples (noise level)
  median_bandwidth(x, y)        the median heuristic used by mmd2's default bandwidths
  reference_bandwidths(ref)     one fixed kernel from reference samples alone (comparable MMDs)
  nll                           NLLs of flows and flow-based GEBMs, Monte-Carlo log Z with its
                                standard error (kale_jax.metrics.nll)
"""
from kale_jax.metrics import nll
from kale_jax.metrics.mmd import (DEFAULT_BANDWIDTH_SCALES, median_bandwidth, mmd2, mmd2_noise,
                                  reference_bandwidths)

__all__ = ["DEFAULT_BANDWIDTH_SCALES", "median_bandwidth", "mmd2", "mmd2_noise", "nll", "reference_bandwidths"]
