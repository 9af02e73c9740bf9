"""Records the files a Python process writes under a directory (tests/test_multihost.py).

Put this directory on PYTHONPATH and set KALE_JAX_WRITE_AUDIT=LOG and KALE_JAX_WRITE_AUDIT_ROOT=DIR:
every open() for writing, rename, removal and directory creation of a path under DIR made
through Python (sys.addaudithook: builtins.open, os.open, os.replace, ...) appends a line
"event<TAB>path" to LOG. Writes made by C++ libraries (orbax's TensorStore array files) are not
seen. Without the variables nothing happens.
"""
import os
import sys

_LOG = os.environ.get("KALE_JAX_WRITE_AUDIT")
_ROOT = os.environ.get("KALE_JAX_WRITE_AUDIT_ROOT")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _install(log_path: str, root: str) -> None:
    root = os.path.abspath(root)
    log = open(log_path, "a", buffering=1)  # pylint: disable=consider-using-with

    def under_root(path) -> bool:
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        return isinstance(path, str) and os.path.abspath(path).startswith(root + os.sep)

    def record(event, paths):
        for path in paths:
            if under_root(path):
                log.write(f"{event}\t{os.path.relpath(os.path.abspath(os.fsdecode(path)), root)}\n")

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                mode is None and isinstance(flags, int) and flags & _WRITE_FLAGS)
            if writing:
                record("open", [path])
        elif event in ("os.rename", "os.remove", "os.mkdir", "os.truncate", "shutil.rmtree"):
            record(event, [a for a in args[:2] if isinstance(a, (str, bytes))])

    sys.addaudithook(hook)


if _LOG and _ROOT:
    _install(_LOG, _ROOT)
