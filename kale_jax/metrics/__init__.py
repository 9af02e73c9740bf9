"""Sample-quality metrics.

  mmd2(x, y, bandwidths=None)   unbiased squared MMD, Gaussian-mixture kernel (kale_jax.metrics.mmd)
  median_bandwidth(x, y)        the median heuristic used by mmd2's default bandwidths
  reference_bandwidths(ref)     one fixed kernel from reference samples alone (comparable MMDs)
  nll                           NLLs of flows and flow-based GEBMs, Monte-Carlo log Z with its
                                standard error (kale_jax.metrics.nll)
"""
from kale_jax.metrics import nll
from kale_jax.metrics.mmd import (DEFAULT_BANDWIDTH_SCALES, median_bandwidth, mmd2,
                                  reference_bandwidths)

__all__ = ["DEFAULT_BANDWIDTH_SCALES", "median_bandwidth", "mmd2", "nll", "reference_bandwidths"]
