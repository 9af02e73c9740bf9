"""Test-wide setup: four forced host devices so multi-device code runs on a CPU-only machine.

XLA reads the flag when the backend starts, so it is set here, before any test imports jax.
"""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
