"""Test-wide setup: four forced host devices so multi-device code runs on a CPU-only machine.

XLA reads the flag when the backend starts, so it is set here, before any test imports jax.
"""
import os
import tempfile

import pytest

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Tests (and the binaries they start) compile many identical programs: the tiny training steps
# of configs/test.py alone are compiled by a dozen subprocess runs. A persistent compilation
# cache shared by the xdist workers (same parent process) and their subprocesses compiles each
# once per test session.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), f"kale_jax_tests_jax_cache_{os.getppid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def subprocess_env() -> dict:
    """The environment for a binary run as a subprocess: this process's, as set up above.

    The binary thus sees the same 4 forced host devices, CPU platform and quiet TensorFlow as the
    tests, and shares the session's persistent compilation cache, so a program one run (or a test)
    compiled is not compiled again by the next.
    """
    return dict(os.environ)


@pytest.fixture(scope="session")
def env():
    """`subprocess_env()` as a fixture: pass it as `env=` to subprocess.run / Popen."""
    return subprocess_env()
