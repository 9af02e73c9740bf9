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



class SmallFilesystems:
    """Makes small file systems for tests of a full disk: tmpfs mounts of a given size, when this
    process may mount (root with CAP_SYS_ADMIN, as in CI). `mount` returns None when it cannot,
    and callers fall back on config.debug.full_disk_at_step; KALE_JAX_TESTS_NO_MOUNT=1 forces
    that fallback (to test it as root)."""

    def __init__(self, root: str):
        self.root = root
        self.mounted = []

    def mount(self, size: str) -> "str | None":
        """A fresh tmpfs of `size` (e.g. '400k'); its path, or None when mounting is refused."""
        import subprocess  # pylint: disable=g-import-not-at-top
        path = tempfile.mkdtemp(dir=self.root)
        if os.geteuid() != 0 or os.environ.get("KALE_JAX_TESTS_NO_MOUNT") == "1":
            return None
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                                capture_output=True, check=False)
        if result.returncode != 0:
            return None
        self.mounted.append(path)
        return path

    @staticmethod
    def resize(path: str, size: str) -> None:
        """Grows (or shrinks) a tmpfs made by `mount`, keeping its files."""
        import subprocess  # pylint: disable=g-import-not-at-top
        subprocess.run(["mount", "-o", f"remount,size={size}", path], check=True,
                       capture_output=True)

    def unmount_all(self) -> None:
        import subprocess  # pylint: disable=g-import-not-at-top
        for path in self.mounted:
            subprocess.run(["umount", "-l", path], capture_output=True, check=False)
        self.mounted = []


@pytest.fixture(scope="session")
def small_filesystems(tmp_path_factory):
    """A SmallFilesystems; every file system it made is unmounted at the end of the session."""
    filesystems = SmallFilesystems(str(tmp_path_factory.mktemp("small_filesystems")))
    yield filesystems
    filesystems.unmount_all()


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory):
    """A tiny GEBM trained in-process once per session, for tests that load a trained model.

    configs/test.py (the ring, an mlp pair with latent 4 and BatchNorm in the generator), 3 base
    steps without TensorBoard: the same compiled steps as tests/test_train.py's resume test.
    Checkpoints are committed at base steps 2 and 3. Returns (workdir, config, final state).
    """
    import jax  # pylint: disable=g-import-not-at-top
    from configs import test as test_config  # pylint: disable=g-import-not-at-top
    from kale_jax.train import train_and_evaluate  # pylint: disable=g-import-not-at-top
    config = test_config.get_config()
    config.train.num_steps = 3
    config.train.tensorboard = False
    workdir = str(tmp_path_factory.mktemp("trained") / "ring")
    state = train_and_evaluate(config, workdir)
    return workdir, config, jax.device_get(state)
