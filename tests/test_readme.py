"""Every ```python block of README.md runs as written.

Each block runs on its own, in a fresh namespace (a reader can copy any one block alone), in
README order, with the literal path `workdirs/ring` replaced by conftest.py's `trained_workdir`
(configs/test.py: the ring data with tiny networks, trained for 3 base steps; the README trains
workdirs/ring with configs/ring.py). A block that raises fails its test.
"""
import os
import re

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
WORKDIR = "workdirs/ring"


def python_blocks(text: str):
    """[(line number of the opening fence, code)] of every ```python block."""
    blocks = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
        blocks.append((text.count("\n", 0, match.start()) + 1, match.group(1)))
    return blocks


with open(README, encoding="utf-8") as _f:
    _TEXT = _f.read()
BLOCKS = python_blocks(_TEXT)


def test_extraction_finds_the_blocks():
    """The library, loading and sampling blocks at least; the workdir they load is one the
    README's Training section makes."""
    assert len(BLOCKS) >= 3
    assert python_blocks("a\n```python\nx = 1\n```\n```sh\nls\n```\n") == [(2, "x = 1\n")]
    assert f"--workdir={WORKDIR} " in _TEXT
    assert sum(WORKDIR in code for _, code in BLOCKS) >= 3


@pytest.mark.parametrize("line,code", BLOCKS, ids=[f"README.md:{line}" for line, _ in BLOCKS])
def test_block_runs(line, code, trained_workdir):
    workdir, _, _ = trained_workdir
    source = code.replace(f'"{WORKDIR}"', repr(workdir))
    assert WORKDIR not in source, "a block names workdirs/ring other than as a string literal"
    exec(compile(source, f"README.md:{line}", "exec"), {"__name__": "__readme__"})  # noqa: S102
