"""experiments/roofline.py: XLA's cost analysis on closed forms, the roofline arithmetic on a
hand-computed device, the recipe's step count, the markdown page from given rows, and the
benchmark's roofline section as a subprocess on tiny MLP networks."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from experiments import roofline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A hand-made device: 100 TFLOP/s in every mode, 1 TB/s: ridge point 100 FLOP/byte.
TOY = roofline.Device("toy", {"float32": 100e12, "bfloat16": 100e12}, 1e12)


def _matmul_cost(m, k, n):
    a = jnp.zeros((m, k), jnp.float32)
    b = jnp.zeros((k, n), jnp.float32)
    return roofline.cost_of(jax.jit(jnp.dot).lower(a, b).compile())


@pytest.mark.parametrize("m,k,n", [(64, 128, 32), (256, 256, 256), (1024, 1024, 1024)])
def test_matmul_cost_is_2mkn_flops_and_reads_and_writes_every_operand(m, k, n):
    """XLA:CPU (jax 0.10) reports 'flops' = 2 m k n (one multiply and one add per term) and, for
    a lone dot, 'bytes accessed' = 4 (mk + kn + mn) exactly: each operand read once, the result
    written once. The contract checked is >= (a backend may move more)."""
    cost = _matmul_cost(m, k, n)
    assert cost["flops"] == 2 * m * k * n
    assert cost["bytes"] >= 4 * (m * k + k * n + m * n)
    assert cost["bytes"] == pytest.approx(4 * (m * k + k * n + m * n), rel=1e-6)


def test_convolution_flops_count_only_valid_taps():
    """A 3x3 'SAME' convolution over 32x32: along one axis the 32 outputs see 3 * 32 - 2 = 94
    input taps (the two edges lose one each), so 94^2 taps per feature pair, and XLA counts
    2 * batch * 94^2 * in * out FLOPs (not 2 * batch * 32^2 * 9 * in * out)."""
    x = jnp.zeros((8, 32, 32, 16), jnp.float32)
    w = jnp.zeros((3, 3, 16, 32), jnp.float32)
    conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
    cost = roofline.cost_of(conv.lower(x, w).compile())
    assert cost["flops"] == 2 * 8 * 94 ** 2 * 16 * 32
    assert cost["bytes"] >= 4 * (x.size + w.size + 8 * 32 * 32 * 32)


def test_matmul_bytes_counts_the_operands_and_results_of_convolutions_and_dots():
    """The gradient of sum(tanh(conv(x, w))) in x and w has three convolutions (forward, input
    gradient, kernel gradient), each reading two of x, w, dy and writing the third (dx, dw or y,
    same sizes): 3 (|x| + |w| + |y|) float32 bytes. XLA:CPU's 'bytes accessed' also counts the
    unfused tanh and its derivative, so it is larger."""
    x = jnp.zeros((8, 32, 32, 16), jnp.float32)
    w = jnp.zeros((3, 3, 16, 32), jnp.float32)

    def loss(x, w):
        return jnp.tanh(jax.lax.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))).sum()

    compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, w).compile()
    fused = roofline.matmul_bytes(compiled.as_text())
    assert fused == 3 * 4 * (x.size + w.size + 8 * 32 * 32 * 32)
    assert roofline.cost_of(compiled)["bytes"] > fused
    a, b = jnp.zeros((64, 128)), jnp.zeros((128, 32))
    assert roofline.matmul_bytes(jax.jit(jnp.dot).lower(a, b).compile().as_text()) == \
        4 * (64 * 128 + 128 * 32 + 64 * 32)
    assert roofline.matmul_bytes(jax.jit(jnp.tanh).lower(a).compile().as_text()) is None


def test_costs_do_not_depend_on_llvm_optimisation():
    """The benchmark compiles cost-only programs with xla_backend_optimization_level=0: the
    optimised HLO, and so both byte counts and the FLOPs, are those of a normal compile."""
    x = jnp.zeros((4, 16, 16, 8), jnp.float32)
    w = jnp.zeros((3, 3, 8, 8), jnp.float32)

    def loss(x, w):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.sum(jax.nn.softplus(y) ** 2)

    lowered = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, w)
    normal = lowered.compile()
    fast = lowered.compile(compiler_options={"xla_backend_optimization_level": 0})
    assert roofline.cost_of(fast) == roofline.cost_of(normal)
    assert roofline.matmul_bytes(fast.as_text()) == roofline.matmul_bytes(normal.as_text())


def test_roofline_of_a_matmul_on_a_hand_computed_device():
    # 256^3: F = 2 * 256^3 = 33,554,432; B = 4 * 3 * 256^2 = 786,432; F / B = 256 / 6 = 42.67
    # < ridge 100: memory-bound, time = B / 1e12 s.
    cost = _matmul_cost(256, 256, 256)
    line = roofline.roofline(cost["flops"], cost["bytes"], 100e12, 1e12)
    assert line.intensity == pytest.approx(256 / 6)
    assert line.ridge == pytest.approx(100.0)
    assert line.bound == "memory"
    assert line.time_s == pytest.approx(786_432 / 1e12)
    # 1024^3: F / B = 1024 / 6 = 170.7 >= 100: compute-bound, time = 2 * 1024^3 / 1e14 s.
    cost = _matmul_cost(1024, 1024, 1024)
    line = roofline.roofline(cost["flops"], cost["bytes"], 100e12, 1e12)
    assert line.intensity == pytest.approx(1024 / 6)
    assert line.bound == "compute"
    assert line.time_s == pytest.approx(2 * 1024 ** 3 / 1e14)
    # At the efficiency 0.25 the compute term is 4x longer; the memory term does not change.
    assert roofline.projected_time(cost["flops"], cost["bytes"], 100e12, 1e12, 0.25) == \
        pytest.approx(4 * 2 * 1024 ** 3 / 1e14)
    assert roofline.projected_time(1.0, 1e6, 100e12, 1e12, 0.25) == pytest.approx(1e-6)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="bytes"):
        roofline.roofline(1.0, 0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="efficiency"):
        roofline.projected_time(1.0, 1.0, 1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="float32"):
        roofline.peak_for(TOY, "float16")


def test_float32_models_get_the_peak_of_jax_default_precision():
    devices = roofline.DEVICES
    assert roofline.peak_for(devices["A100"], "float32") == 156e12  # TF32 tensor cores
    assert roofline.peak_for(devices["A100"], "bfloat16") == 312e12
    assert roofline.peak_for(devices["H100"], "bfloat16") == 989.5e12
    for tpu in ("TPUv4", "TPUv5e"):  # one bfloat16 pass on the MXU
        assert roofline.peak_for(devices[tpu], "float32") == devices[tpu].peak["bfloat16"]
    assert devices["TPUv4"].peak["bfloat16"] == 275e12 and devices["TPUv4"].bandwidth == 1200e9


def test_ring_allreduce_and_smallest_compute_bound_batch():
    # 16 chips, 100 MB, 200 GB/s: 2 * 15 / 16 * 1e8 / 2e11 s = 0.9375 ms; one chip: nothing.
    assert roofline.ring_allreduce_s(1e8, 16, 2e11) == pytest.approx(0.9375e-3)
    assert roofline.ring_allreduce_s(1e8, 1, 2e11) == 0.0
    intensity = {1: 10.0, 2: 60.0, 4: 120.0, 8: 90.0, 16: 150.0, 32: 200.0}
    assert roofline.smallest_compute_bound_batch(intensity, 100.0) == 16  # 8 dips below
    assert roofline.smallest_compute_bound_batch(intensity, 50.0) == 2
    assert roofline.smallest_compute_bound_batch(intensity, 500.0) is None


def test_recipe_steps_follow_the_training_schedule():
    from configs import default  # pylint: disable=g-import-not-at-top
    from kale_jax.train import schedule  # pylint: disable=g-import-not-at-top
    config = default.get_config()
    train = config.train
    for base_steps in (1, 499, 500, 501, 150_000):
        energy, base = roofline.recipe_steps(base_steps, train.n_critic, train.n_critic_warmup,
                                             train.warmup_every)
        assert base == base_steps
        assert energy == schedule.energy_steps_until(base_steps, config)
    # The paper's recipe: 300 warm-ups of 100 and 149,700 rounds of 5.
    assert roofline.recipe_steps(150_000) == (300 * 100 + 149_700 * 5, 150_000)


def _report():
    """Given rows: a net whose energy step is 1 GFLOP / 10 MB per example and base step half."""
    costs = []
    for batch in (8, 16, 128):
        costs += [{"net": "toy", "step": "energy", "batch": batch, "flops": batch * 1e9,
                   "bytes": 1e8 + batch * 1e7},
                  {"net": "toy", "step": "base", "batch": batch, "flops": batch * 0.5e9,
                   "bytes": 1e8 + batch * 1e7},
                  {"net": "toy", "step": "ula", "batch": batch, "flops": batch * 0.2e9,
                   "bytes": batch * 1e7, "bytes_fused": batch * 1e6}]
    devices = [roofline.DEVICES["A100"], roofline.DEVICES["TPUv4"], TOY]
    return roofline.Report(
        costs=costs, devices=devices, param_bytes={"toy": {"energy": 4_000_004, "base": 8e6}},
        efficiency={"toy/energy": 0.5, "toy/base": 0.5, "toy/ula": 0.25}, step_batch=128,
        command="python -m experiments.benchmark --section=roofline --markdown=x.md",
        notes=["a note"])


def test_markdown_writes_every_table_from_given_rows():
    text = roofline.markdown(_report())
    for heading in ("## Devices", "## Recipe time (float32)",
                    "## Per step at per-device batch 128 (float32)",
                    "## Smallest compute-bound per-device batch", "## XLA cost analysis per step"):
        assert heading in text
    assert "projection" in text and "--section=train" in text and "* a note" in text
    lines = text.splitlines()

    def row(*cells):
        prefix = "| " + " | ".join(cells) + " |"
        found = [line for line in lines if line.startswith(prefix)]
        assert len(found) == 1, (prefix, found)
        return [cell.strip() for cell in found[0].strip("|").split("|")]

    # Recipe on one A100, batch 128 (TF32 peak 156e12 FLOP/s, 2039e9 B/s): energy F = 1.28e11,
    # B = 1.38e9: max(0.8205 ms, 0.6768 ms); base F = 0.64e11: max(0.4103 ms, 0.6768 ms); then
    # 778,500 energy and 150,000 base steps (740.29 s). At efficiency 0.5 the compute terms
    # double (1.641 ms and max(0.8205, 0.6768) ms: 1400.62 s).
    seconds = roofline._seconds  # pylint: disable=protected-access
    memory_s = 1.38e9 / 2039e9
    ideal = 778_500 * max(1.28e11 / 156e12, memory_s) + 150_000 * max(0.64e11 / 156e12, memory_s)
    projected = (778_500 * max(1.28e11 / 78e12, memory_s)
                 + 150_000 * max(0.64e11 / 78e12, memory_s))
    assert row("toy", "1 x A100", "128")[3:6] == [seconds(ideal), "-", seconds(projected)]
    assert seconds(ideal) == "12.3 min" and seconds(projected) == "23.3 min"
    # TPU v4-32: 16 chips at batch 8, plus a ring all-reduce of 4 MB (energy) / 8 MB (base) at
    # 1.1e15 / 4096 B/s: 2 * 15 / 16 * 4e6 / 2.686e11 = 27.9 us and 55.9 us.
    cells = row("toy", "TPU v4-32 (16 chips)", "8")
    allreduce_e = 2 * 15 / 16 * 4_000_004 / (1.1e15 / 4096)
    allreduce_b = 2 * 15 / 16 * 8e6 / (1.1e15 / 4096)
    assert cells[6] == f"{allreduce_e * 1e6:.3g} / {allreduce_b * 1e6:.3g} us"
    step_e = max(8e9 / 275e12, 1.8e8 / 1200e9)
    step_b = max(4e9 / 275e12, 1.8e8 / 1200e9)
    pod_s = 778_500 * (step_e + allreduce_e) + 150_000 * (step_b + allreduce_b)
    assert cells[3] == seconds(pod_s)
    # Per step on the toy device at batch 128: ula F = 2.56e10, B = 1.28e9, intensity 20 < 100;
    # with the convs-and-dots bytes 1.28e8, intensity 200: compute-bound, 2.56e10 / 1e14 s.
    cells = row("toy", "ula", "128", "toy")
    assert cells[4:8] == ["1.28 ms", "20.0", "100.0", "memory"]
    assert cells[-2:] == ["256 us", "compute"]
    # Smallest compute-bound batch: energy intensity 8e9 / 1.8e8 = 44, 16e9 / 2.6e8 = 62,
    # 128e9 / 1.38e9 = 93: above the A100's ridge 156 / 2.039 = 76.5 at 128 only, below the
    # TPU v4's 229 and the toy device's 100; the ULA step (intensity 20) never.
    assert row("toy", "energy", "128 / -")[2:] == ["128 / -", "none <= 128 / -",
                                                    "none <= 128 / -"]
    # ULA: intensity 20 with XLA:CPU's bytes, 200 with the fused ones (every batch): compute-bound
    # from batch 8 on the A100 (ridge 76.5) and the toy device (100), not on the TPU v4 (229).
    assert row("toy", "ula", "none <= 128 / 8")[2:] == ["none <= 128 / 8", "none <= 128 / none "
                                                        "<= 128", "none <= 128 / 8"]


def test_benchmark_roofline_section_emits_a_row_per_step_and_batch(tmp_path):
    cache = tmp_path / "cache.jsonl"
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # one host device, like a user's run
    cmd = [sys.executable, "-m", "experiments.benchmark", "--section=roofline", "--net=mlp",
           "--batch=2", "--roofline_batches=2", "--generator_width=8", "--energy_width=8",
           "--cpu_efficiency=0.5", "--memory_gb_per_s=10", "--matmul_size=64",
           f"--roofline_cache={cache}"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    rows = [r for r in rows if r["section"] == "roofline"]
    assert [r["step"] for r in rows] == ["energy", "base", "ula"]
    for r in rows:
        assert r["batch"] == 2 and r["devices"] == 1 and r["cpu_efficiency"] == 0.5
        assert r["gflop"] > 0 and r["gbytes"] > r["gbytes_fused"] > 0
        assert r["intensity"] == pytest.approx(r["gflop"] / r["gbytes"], rel=2e-3)
        for name in ("A100", "H100", "TPUv4", "TPUv5e", "cpu"):
            assert r[f"{name}_bound"] in ("compute", "memory")
            assert r[f"{name}_roofline_ms"] > 0
        # The tiny MLP moves ~1 byte per FLOP: memory-bound everywhere; on the A100 its time is
        # the bytes over 2039 GB/s.
        assert r["A100_bound"] == "memory"
        assert r["A100_roofline_ms"] == pytest.approx(r["gbytes"] / 2039 * 1e3, rel=1e-3)
    # The cache holds the three rows, with the exact costs a later run reuses.
    cached = [json.loads(line) for line in cache.read_text().splitlines()]
    assert [c["step"] for c in cached] == ["energy", "base", "ula"]
    for c, r in zip(cached, rows):
        assert c["cache_key"] and c["flops"] / 1e9 == pytest.approx(r["gflop"], rel=1e-3)


def test_benchmark_roofline_section_refuses_bad_batches_before_compiling():
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    cmd = [sys.executable, "-m", "experiments.benchmark", "--section=roofline", "--net=mlp",
           "--roofline_batches=0,8", "--matmul_size=64"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "--roofline_batches=0,8: expected positive integers" in proc.stderr
    assert '"section": "roofline"' not in proc.stdout
