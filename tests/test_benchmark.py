"""experiments.benchmark as a subprocess on tiny MLP networks: every section prints JSON rows
with the documented keys and types, then the table (speed is not checked here)."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

COMMON = {"section", "net", "variant", "batch", "latent", "generator_width", "energy_width", "compile_s",
          "cpu_ms", "peak_rss_mb", "load_avg_1m"}
FLOP_KEYS = {"gflop", "gflop_per_s", "matmul_fraction"}
EXPECTED = {  # (section, step or kernel) -> figure keys
    ("train", "energy"): {"energy_step_ms"} | FLOP_KEYS,
    ("train", "base"): {"generator_step_ms"} | FLOP_KEYS,
    ("train", "iteration"): {"iteration_ms", "n_critic"} | FLOP_KEYS,
    ("sampler", "ula"): {"ms_per_step", "kernel", "unroll"} | FLOP_KEYS,
    ("sampler", "mala"): {"ms_per_step", "kernel", "unroll"} | FLOP_KEYS,
    ("sampling", "ula"): {"latents_per_s", "kernel", "num_steps", "num_latents", "chunk_size"},
}


@pytest.fixture(scope="module")
def output():
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # one host device, like a user's run
    cmd = [sys.executable, "-m", "experiments.benchmark", "--section=all", "--net=mlp",
           "--batch=4", "--generator_width=8", "--energy_width=8", "--kernels=ula,mala",
           "--repeats=1", "--num_steps=2", "--n_critic=2", "--sampling_steps=2",
           "--num_latents=6", "--matmul_size=64"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _rows(stdout):
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_every_section_emits_rows_with_the_documented_keys_and_types(output):
    rows = _rows(output)
    machine = [r for r in rows if r["section"] == "machine"]
    assert len(machine) == 1 and machine[0]["reference"] == "xla"
    assert machine[0]["xla_matmul_gflop_per_s"] > 0 and machine[0]["numpy_matmul_gflop_per_s"] > 0
    seen = set()
    for row in rows[1:]:
        which = (row["section"], row.get("step") or row.get("kernel"))
        assert which in EXPECTED, row
        seen.add(which)
        missing = (COMMON | EXPECTED[which]) - set(row)
        assert not missing, (which, missing)
        assert row["net"] == "mlp" and row["batch"] == 4 and row["latent"] == 100
        assert row["variant"] is None  # one family of mlp networks; image nets: --variant
        for key in ("energy_step_ms", "generator_step_ms", "iteration_ms", "ms_per_step",
                    "latents_per_s", "compile_s", "cpu_ms", "peak_rss_mb", "gflop",
                    "gflop_per_s", "matmul_fraction"):
            if key in row:
                assert isinstance(row[key], float) and row[key] > 0, (which, key, row[key])
    assert seen == set(EXPECTED)


FIGURE = {"energy": "energy_step_ms", "base": "generator_step_ms", "iteration": "iteration_ms"}


def test_table_shows_each_row_its_own_figures(output):
    """Line i of the table is JSON row i: its section, net, variant and step / kernel, and its
    own time and CPU time (e.g. a train row must not show another row's ms)."""
    rows = [r for r in _rows(output) if r["section"] != "machine"]
    lines = output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("section "))
    table = [line.split() for line in lines[header + 1:header + 1 + len(rows)]]
    for row, cells in zip(rows, table):
        what = row.get("step") or row.get("kernel")
        assert cells[:4] == [row["section"], row["net"], row["variant"] or "-", what], (cells,
                                                                                       row)
        ms = row[FIGURE[what]] if row["section"] == "train" else row["ms_per_step"]
        assert float(cells[4]) == pytest.approx(ms, abs=0.051), (cells, row)
        assert float(cells[5]) == pytest.approx(row["cpu_ms"], abs=0.051), (cells, row)


def test_table_follows_the_json_rows(output):
    lines = output.splitlines()
    header = [i for i, line in enumerate(lines) if line.startswith("section ")]
    assert header and all(line.startswith("{") for line in lines[:header[0]])
    assert lines[-1].startswith("reference dense matmul")
