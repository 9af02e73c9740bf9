"""A roofline performance model for accelerators: named devices, roofline times, projections.

Pure arithmetic on FLOPs and bytes (from XLA's cost analysis, see `cost_of`), no jax import: the
benchmark's `--section=roofline` (experiments/benchmark.py) compiles the training and MCMC steps,
and this module turns their costs into roofline times, projections and the markdown tables of
docs/performance_model.md. Every figure here is a projection, not a measurement.

Units: FLOPs and bytes per step; peaks in FLOP/s; bandwidths in bytes/s; times in seconds.
"""
import dataclasses
import re
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

TERA = 1e12
GIGA = 1e9


@dataclasses.dataclass(frozen=True)
class Device:
    """One accelerator chip (or this CPU) for the roofline model.

    Attributes:
      name: short name used in tables and flags.
      peak: dense peak FLOP/s per arithmetic mode ('float32', 'tf32', 'bfloat16'; no sparsity).
      bandwidth: main-memory (HBM) bandwidth, bytes/s.
      float32_mode: the key of `peak` a float32 model runs its matmuls and convolutions at under
        jax's default matmul precision (see `peak_for`).
      allreduce_bandwidth: per-chip all-reduce bandwidth over the chip interconnect, bytes/s (None:
        no interconnect modelled).
      source: where the figures come from.
    """
    name: str
    peak: Mapping[str, float]
    bandwidth: float
    float32_mode: str = "float32"
    allreduce_bandwidth: Optional[float] = None
    source: str = ""


# jax's default matmul precision ("By default, JAX leans toward speed: float32 dot products may be
# computed with reduced-precision arithmetic internally (bfloat16 on TPU, TF32 on recent GPUs)",
# https://docs.jax.dev/en/latest/201/precision.html): a float32 model gets the TF32 tensor-core
# peak on A100/H100 and the one-pass bfloat16 MXU peak on TPU. With precision='highest' it would
# get the CUDA-core float32 peak on GPU, and on TPU about 1/6 of the bfloat16 peak (float32
# emulated by six bfloat16 passes; 'high' = three passes).
DEVICES: Dict[str, Device] = {
    # NVIDIA A100 Tensor Core GPU datasheet (SXM4 80GB column; dense figures, "with sparsity"
    # doubles the tensor-core ones): FP32 19.5 TFLOPS, TF32 156, BF16 312; HBM2e 2,039 GB/s.
    # https://www.nvidia.com/en-us/data-center/a100/ (datasheet PDF linked there,
    # nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf)
    "A100": Device("A100", {"float32": 19.5 * TERA, "tf32": 156 * TERA, "bfloat16": 312 * TERA},
                   2039 * GIGA, float32_mode="tf32",
                   source="NVIDIA A100 datasheet (SXM4 80GB, dense)"),
    # NVIDIA H100 Tensor Core GPU datasheet (H100 SXM column; the datasheet's TF32/BF16 figures
    # are with sparsity, dense is half): FP32 67 TFLOPS, TF32 494.5, BF16 989.5; HBM3 3.35 TB/s.
    # https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet
    "H100": Device("H100", {"float32": 67 * TERA, "tf32": 494.5 * TERA, "bfloat16": 989.5 * TERA},
                   3350 * GIGA, float32_mode="tf32",
                   source="NVIDIA H100 datasheet (SXM, dense)"),
    # Cloud TPU v4 docs, system architecture (https://cloud.google.com/tpu/docs/v4): peak compute
    # per chip 275 TFLOPS (bf16 or int8), HBM2 32 GiB at 1200 GBps; all-reduce bandwidth per pod
    # 1.1 PB/s over 4096 chips, i.e. 1.1e15 / 4096 = 269 GB/s per chip (our reading of the
    # per-pod figure). 'float32' here is bfloat16 / 6 (precision='highest', six passes).
    "TPUv4": Device("TPUv4", {"float32": 275 * TERA / 6, "bfloat16": 275 * TERA}, 1200 * GIGA,
                    float32_mode="bfloat16", allreduce_bandwidth=1.1e15 / 4096,
                    source="Cloud TPU v4 docs (per chip)"),
    # Cloud TPU v5e docs (https://cloud.google.com/tpu/docs/v5e): peak compute per chip (bf16)
    # 197 TFLOPS, HBM2 16 GB at 819 GBps; all-reduce bandwidth per pod 51.2 TB/s over 256 chips
    # = 200 GB/s per chip.
    "TPUv5e": Device("TPUv5e", {"float32": 197 * TERA / 6, "bfloat16": 197 * TERA}, 819 * GIGA,
                     float32_mode="bfloat16", allreduce_bandwidth=51.2e12 / 256,
                     source="Cloud TPU v5e docs (per chip)"),
}


def cpu_device(matmul_flops_per_s: float, bandwidth: float) -> Device:
    """This machine's CPU as a Device (measured, not a datasheet).

    Args:
      matmul_flops_per_s: the measured dense float32 matmul rate under XLA, FLOP/s (all cores).
      bandwidth: the measured (or given) memory bandwidth, bytes/s.
    Returns:
      A Device named 'cpu' whose float32 (and, for want of a figure, bfloat16) peak is the matmul
      rate.
    """
    return Device("cpu", {"float32": matmul_flops_per_s, "bfloat16": matmul_flops_per_s},
                  bandwidth, source="measured here: XLA 2048^3 matmul; memory copy")


def copy_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """This machine's memory bandwidth from a large array copy (numpy), bytes/s.

    Args:
      megabytes: size of the copied array (well beyond the caches).
      repeats: copies timed; the fastest counts.
    Returns:
      2 * size / time (a copy reads and writes every byte), bytes/s.
    """
    import time  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top
    src = np.ones(megabytes * 2 ** 20 // 8, np.float64)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return 2.0 * src.nbytes / best


def peak_for(device: Device, dtype: str) -> float:
    """Peak FLOP/s a model computing in `dtype` gets on `device` (jax's default precision).

    Args:
      device: the device.
      dtype: the model's compute dtype, 'float32' or 'bfloat16'.
    Returns:
      FLOP/s: the `device.float32_mode` peak for float32, the bfloat16 peak for bfloat16.
    """
    if dtype == "float32":
        return device.peak[device.float32_mode]
    if dtype == "bfloat16":
        return device.peak["bfloat16"]
    raise ValueError(f"dtype={dtype!r}: expected 'float32' or 'bfloat16'")


class Roofline(NamedTuple):
    """The roofline of one step on one device.

    Attributes:
      time_s: max(flops / peak, bytes / bandwidth), seconds.
      intensity: flops / bytes, FLOP/byte.
      ridge: peak / bandwidth, FLOP/byte: the intensity above which the step is compute-bound.
      bound: 'compute' if intensity >= ridge, else 'memory'.
    """
    time_s: float
    intensity: float
    ridge: float
    bound: str


def roofline(flops: float, bytes_accessed: float, peak: float, bandwidth: float) -> Roofline:
    """Roofline time, arithmetic intensity, ridge point and bound of one step.

    Args:
      flops: FLOPs of the step.
      bytes_accessed: bytes the step reads and writes from main memory.
      peak: the device's peak, FLOP/s.
      bandwidth: the device's memory bandwidth, bytes/s.
    Returns:
      A Roofline.
    """
    if flops < 0 or bytes_accessed <= 0 or peak <= 0 or bandwidth <= 0:
        raise ValueError(f"roofline needs flops >= 0 and positive bytes, peak and bandwidth; got "
                         f"{flops}, {bytes_accessed}, {peak}, {bandwidth}")
    intensity = flops / bytes_accessed
    ridge = peak / bandwidth
    return Roofline(time_s=max(flops / peak, bytes_accessed / bandwidth), intensity=intensity,
                    ridge=ridge, bound="compute" if intensity >= ridge else "memory")


def projected_time(flops: float, bytes_accessed: float, peak: float, bandwidth: float,
                   efficiency: float) -> float:
    """Step time if the device reaches `efficiency` of its peak, as this CPU does, seconds.

    The compute term is flops / (efficiency * peak); the memory term stays the roofline's
    bytes / bandwidth; the step takes the larger.

    Args:
      flops, bytes_accessed, peak, bandwidth: as in `roofline`.
      efficiency: achieved FLOP/s over peak FLOP/s, in (0, 1], measured on this CPU.
    Returns:
      Seconds per step.
    """
    if not 0 < efficiency <= 1:
        raise ValueError(f"efficiency={efficiency}: expected a fraction in (0, 1]")
    return max(flops / (efficiency * peak), bytes_accessed / bandwidth)


def ring_allreduce_s(nbytes: float, num_chips: int, bandwidth: float) -> float:
    """Time of a bandwidth-optimal (ring) all-reduce of `nbytes` over `num_chips`, seconds.

    Each chip sends and receives 2 (n - 1) / n * nbytes; latency is left out.

    Args:
      nbytes: bytes to reduce (e.g. the float32 gradients: 4 * parameter count).
      num_chips: chips taking part.
      bandwidth: per-chip all-reduce bandwidth, bytes/s.
    Returns:
      Seconds.
    """
    if num_chips <= 1:
        return 0.0
    return 2.0 * (num_chips - 1) / num_chips * nbytes / bandwidth


def recipe_steps(base_steps: int, n_critic: int = 5, n_critic_warmup: int = 100,
                 warmup_every: int = 500) -> Tuple[int, int]:
    """Energy and base steps of a GEBM run (kale_jax.train.schedule's rule).

    The energy takes `n_critic_warmup` steps before base steps 0, warmup_every, 2 warmup_every,
    ... and `n_critic` before every other base step.

    Args:
      base_steps: base (generator) steps of the run.
      n_critic, n_critic_warmup, warmup_every: the schedule (configs/default.py's values).
    Returns:
      (energy steps, base steps).
    """
    warmups = -(-base_steps // warmup_every) if warmup_every > 0 else 0
    return warmups * n_critic_warmup + (base_steps - warmups) * n_critic, base_steps


def cost_of(compiled: Any) -> Dict[str, Optional[float]]:
    """FLOPs and bytes accessed of one call of a compiled XLA program (its cost analysis).

    Args:
      compiled: a `jax.stages.Compiled` (or anything with `cost_analysis()`); jax 0.10 returns a
        dict with keys 'flops', 'bytes accessed', 'transcendentals', and per-operand
        'bytes accessed0{}'... (older versions a one-element list of it).
    Returns:
      {'flops': ..., 'bytes': ...}, each None when XLA reports nothing or zero.
    """
    try:
        cost = compiled.cost_analysis()
    except Exception:  # pylint: disable=broad-except
        cost = None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    cost = cost or {}

    def positive(key):
        value = cost.get(key)
        return float(value) if value and value > 0 else None

    return {"flops": positive("flops"), "bytes": positive("bytes accessed")}


_ELEMENT_BYTES = {"f64": 8, "s64": 8, "u64": 8, "c64": 8, "f32": 4, "s32": 4, "u32": 4,
                  "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "s8": 1, "u8": 1, "pred": 1}
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(\w+)\[([\d,]*)\]\S*\s+"
                          r"([\w\-]+)\((.*?)\)")


def matmul_bytes(hlo_text: str) -> Optional[float]:
    """Bytes read and written by the program's convolutions and dots alone (operands + result).

    The traffic the step would have if every other op (element-wise work, copies, transposes,
    reductions) were fused into them: a lower bound on the memory traffic of a backend that fuses
    well, where XLA's own 'bytes accessed' on CPU follows XLA:CPU's fusion.

    Args:
      hlo_text: the optimised HLO of a compiled program (`compiled.as_text()`).
    Returns:
      Bytes, or None if the program has no convolution or dot.
    """
    total, found = 0.0, False
    sizes: Dict[str, float] = {}
    for line in hlo_text.splitlines():
        if not line.startswith((" ", "\t")):  # a new computation: names are local to it
            sizes = {}
            continue
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        name, element, dims, opcode, operands = match.groups()
        count = 1
        for dim in filter(None, dims.split(",")):
            count *= int(dim)
        sizes[name] = count * _ELEMENT_BYTES.get(element, 4)
        if opcode in ("convolution", "dot"):
            names = [o.strip().lstrip("%") for o in operands.split(",")]
            total += sizes[name] + sum(sizes.get(o, 0.0) for o in names)
            found = True
    return total if found else None


def smallest_compute_bound_batch(intensity_by_batch: Mapping[int, float],
                                 ridge: float) -> Optional[int]:
    """The smallest batch from which on (every larger scanned batch too) the step is compute-bound.

    Args:
      intensity_by_batch: per-device batch -> arithmetic intensity, FLOP/byte.
      ridge: the device's ridge point, FLOP/byte.
    Returns:
      That batch, or None if the largest scanned batch is memory-bound.
    """
    found = None
    for batch in sorted(intensity_by_batch, reverse=True):
        if intensity_by_batch[batch] < ridge:
            break
        found = batch
    return found


# ---------------------------------------------------------------------------------- markdown

STEPS = ("energy", "base", "ula")


def _seconds(s: float) -> str:
    if s >= 3600:
        return f"{s / 3600:.2f} h"
    if s >= 60:
        return f"{s / 60:.1f} min"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} us"


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def device_table(devices: Sequence[Device]) -> List[str]:
    """Markdown lines: each device's peaks, bandwidth and ridge points."""
    rows = []
    for d in devices:
        rows.append([d.name, f"{d.peak['float32'] / TERA:.3g}",
                     f"{d.peak.get('tf32', 0) / TERA:.3g}" if "tf32" in d.peak else "-",
                     f"{d.peak['bfloat16'] / TERA:.3g}", f"{d.bandwidth / GIGA:.0f}",
                     d.float32_mode, f"{peak_for(d, 'float32') / d.bandwidth:.1f}",
                     f"{peak_for(d, 'bfloat16') / d.bandwidth:.1f}",
                     "-" if d.allreduce_bandwidth is None else
                     f"{d.allreduce_bandwidth / GIGA:.0f}", d.source])
    return _table(["device", "fp32 TFLOP/s", "tf32", "bf16", "HBM GB/s", "float32 model runs as",
                   "ridge, float32 model (FLOP/B)", "ridge, bfloat16 model", "all-reduce GB/s",
                   "source"], rows)


def cost_table(costs: Sequence[Mapping[str, Any]]) -> List[str]:
    """Markdown lines: per net, step and batch, XLA's GFLOP, GB accessed and intensity."""
    rows = []
    for c in costs:
        fused = c.get("bytes_fused")
        rows.append([c["net"], c["step"], c["batch"], f"{c['flops'] / 1e9:.3g}",
                     f"{c['bytes'] / 1e9:.3g}", f"{c['flops'] / c['bytes']:.1f}",
                     "-" if not fused else f"{fused / 1e9:.3g}",
                     "-" if not fused else f"{c['flops'] / fused:.1f}"])
    return _table(["net", "step", "per-device batch", "GFLOP", "GB accessed (XLA:CPU)",
                   "intensity (FLOP/B)", "GB, convs and dots only", "intensity, fused"], rows)


def step_table(costs: Sequence[Mapping[str, Any]], devices: Sequence[Device], dtype: str,
               efficiency: Mapping[str, float]) -> List[str]:
    """Markdown lines: each step on each device: roofline time, bound, projected time and rate.

    Args:
      costs: rows with 'net', 'step', 'batch', 'flops', 'bytes'.
      devices: the devices.
      dtype: the model's compute dtype (chooses the peak, see `peak_for`).
      efficiency: (net + '/' + step) -> this CPU's achieved / peak FLOP/s for that step.
    """
    rows = []
    for c in costs:
        eff = efficiency.get(f"{c['net']}/{c['step']}")
        for d in devices:
            peak = peak_for(d, dtype)
            line = roofline(c["flops"], c["bytes"], peak, d.bandwidth)
            if eff:
                projected = projected_time(c["flops"], c["bytes"], peak, d.bandwidth, eff)
                proj = [_seconds(projected), f"{c['batch'] / projected:,.0f}"]
            else:
                proj = ["-", "-"]
            fused = c.get("bytes_fused")
            fused_cells = ["-", "-"]
            if fused:
                ideal = roofline(c["flops"], fused, peak, d.bandwidth)
                fused_cells = [_seconds(ideal.time_s), ideal.bound]
            rows.append([c["net"], c["step"], c["batch"], d.name, _seconds(line.time_s),
                         f"{line.intensity:.1f}", f"{line.ridge:.1f}", line.bound,
                         f"{c['batch'] / line.time_s:,.0f}", "-" if not eff else f"{eff:.3f}",
                         *proj, *fused_cells])
    return _table(["net", "step", "batch", "device", "roofline time", "intensity", "ridge",
                   "bound", "roofline examples/s", "CPU efficiency", "projected time",
                   "projected examples/s", "roofline, fused", "bound, fused"], rows)


def bound_table(costs: Sequence[Mapping[str, Any]], devices: Sequence[Device],
                dtype: str) -> List[str]:
    """Markdown lines: per net, step and device, the smallest compute-bound per-device batch."""
    by_key: Dict[Tuple[str, str], Dict[str, Dict[int, float]]] = {}
    for c in costs:
        entry = by_key.setdefault((c["net"], c["step"]), {"xla": {}, "fused": {}})
        entry["xla"][c["batch"]] = c["flops"] / c["bytes"]
        if c.get("bytes_fused"):
            entry["fused"][c["batch"]] = c["flops"] / c["bytes_fused"]

    def smallest(intensities, ridge):
        if not intensities:
            return "-"
        batch = smallest_compute_bound_batch(intensities, ridge)
        return f"none <= {max(intensities)}" if batch is None else str(batch)

    rows = []
    for (net, step), entry in by_key.items():
        cells = []
        for d in devices:
            ridge = peak_for(d, dtype) / d.bandwidth
            cells.append(f"{smallest(entry['xla'], ridge)} / {smallest(entry['fused'], ridge)}")
        rows.append([net, step, *cells])
    return _table(["net", "step", *[d.name for d in devices]], rows)


class Recipe(NamedTuple):
    """The paper's training recipe and the data-parallel pod setup it is projected to."""
    base_steps: int = 150_000
    batch: int = 128
    n_critic: int = 5
    n_critic_warmup: int = 100
    warmup_every: int = 500
    pod_chips: int = 16  # a TPU v4-32 slice: 32 TensorCores = 16 chips


def recipe_time(step_s: Mapping[str, float], recipe: Recipe,
                allreduce_s: Optional[Mapping[str, float]] = None) -> float:
    """Seconds of a whole run from per-step times (evaluation left out).

    Args:
      step_s: 'energy' and 'base' -> seconds per step.
      recipe: the recipe (its schedule gives the step counts, see `recipe_steps`).
      allreduce_s: 'energy' and 'base' -> gradient all-reduce seconds added to each step.
    Returns:
      Seconds.
    """
    energy_steps, base_steps = recipe_steps(recipe.base_steps, recipe.n_critic,
                                            recipe.n_critic_warmup, recipe.warmup_every)
    extra = allreduce_s or {"energy": 0.0, "base": 0.0}
    return (energy_steps * (step_s["energy"] + extra["energy"])
            + base_steps * (step_s["base"] + extra["base"]))


def recipe_table(costs: Sequence[Mapping[str, Any]], param_bytes: Mapping[str, Mapping[str, int]],
                 setups: Sequence[Tuple[str, Device, int]], dtype: str,
                 efficiency: Mapping[str, float], recipe: Recipe) -> List[str]:
    """Markdown lines: expected time of the recipe per net and setup.

    Args:
      costs: cost rows (need each net's 'energy' and 'base' at every setup's per-device batch).
      param_bytes: net -> {'energy': bytes of the energy's gradients, 'base': the generator's}.
      setups: (label, device, number of chips); per-device batch = recipe.batch / chips; with
        more than one chip each step adds a ring all-reduce of its gradients.
      dtype, efficiency: as in `step_table`.
      recipe: the Recipe.
    """
    index = {(c["net"], c["step"], c["batch"]): c for c in costs}
    nets = list(dict.fromkeys(c["net"] for c in costs))
    rows = []
    for net in nets:
        for label, device, chips in setups:
            batch = recipe.batch // chips
            pair = {s: index.get((net, s, batch)) for s in ("energy", "base")}
            if None in pair.values():
                continue
            peak = peak_for(device, dtype)
            roof = {s: roofline(c["flops"], c["bytes"], peak, device.bandwidth).time_s
                    for s, c in pair.items()}
            allreduce = {s: 0.0 for s in pair}
            if chips > 1 and device.allreduce_bandwidth:
                allreduce = {s: ring_allreduce_s(param_bytes[net][s], chips,
                                                 device.allreduce_bandwidth) for s in pair}
            cells = [net, label, batch, _seconds(recipe_time(roof, recipe, allreduce))]
            if all(c.get("bytes_fused") for c in pair.values()):
                fused = {s: roofline(c["flops"], c["bytes_fused"], peak, device.bandwidth).time_s
                         for s, c in pair.items()}
                cells.append(_seconds(recipe_time(fused, recipe, allreduce)))
            else:
                cells.append("-")
            effs = {s: efficiency.get(f"{net}/{s}") for s in pair}
            if all(effs.values()):
                projected = {s: projected_time(c["flops"], c["bytes"], peak, device.bandwidth,
                                               effs[s]) for s, c in pair.items()}
                cells.append(_seconds(recipe_time(projected, recipe, allreduce)))
            else:
                cells.append("-")
            cells.append("-" if chips == 1 else
                         f"{allreduce['energy'] * 1e6:.3g} / {allreduce['base'] * 1e6:.3g} us")
            rows.append(cells)
    return _table(["net", "setup", "per-device batch", "roofline", "roofline, fused",
                   "at CPU efficiency", "all-reduce per energy / base step"], rows)


class Report(NamedTuple):
    """Everything `markdown` writes (the benchmark's roofline section fills it).

    Attributes:
      costs: rows {'net', 'step' ('energy', 'base', 'ula'), 'batch' (per device), 'flops',
        'bytes', optionally 'bytes_fused' (see `matmul_bytes`)}, from XLA's cost analysis of the
        compiled per-device step.
      devices: the devices to project to (this CPU last, usually).
      efficiency: 'net/step' -> this CPU's achieved / peak FLOP/s for that step.
      param_bytes: net -> {'energy': gradient bytes of the energy step, 'base': of the base step}.
      step_batch: the per-device batch of the per-step table.
      dtype: the model's compute dtype.
      recipe: the training recipe projected.
      command: the command that generated the report.
      notes: lines (markdown) about the measurement: date, machine, how the figures were taken.
    """
    costs: Sequence[Mapping[str, Any]]
    devices: Sequence[Device]
    efficiency: Mapping[str, float]
    param_bytes: Mapping[str, Mapping[str, int]]
    step_batch: int
    dtype: str = "float32"
    recipe: Recipe = Recipe()
    command: str = ""
    notes: Sequence[str] = ()


def markdown(report: Report) -> str:
    """The performance-model page (docs/performance_model.md) from a Report; no jax needed.

    Args:
      report: the Report.
    Returns:
      Markdown text.
    """
    recipe = report.recipe
    by_name = {d.name: d for d in report.devices}
    setups = [(f"1 x {n}", by_name[n], 1) for n in ("A100", "H100") if n in by_name]
    if "TPUv4" in by_name:
        setups.append((f"TPU v4-{2 * recipe.pod_chips} ({recipe.pod_chips} chips)",
                       by_name["TPUv4"], recipe.pod_chips))
    energy_steps, base_steps = recipe_steps(recipe.base_steps, recipe.n_critic,
                                            recipe.n_critic_warmup, recipe.warmup_every)
    step_costs = [c for c in report.costs if c["batch"] == report.step_batch]
    out = [
        "# Performance model for accelerators (projections)",
        "",
        "Generated by `" + report.command + "`; do not edit by hand, rerun the command.",
        "",
        "**Everything below is a projection from XLA's cost analysis of the compiled steps and "
        "datasheet peaks, not a measurement on an accelerator.** No GPU or TPU was available to "
        "this project. To confirm a row, run the same benchmark on the accelerator (e.g. "
        f"`python -m experiments.benchmark --section=train --net=sngan --batch={recipe.batch} "
        "--devices=1` on one A100) and compare its `energy_step_ms` / `generator_step_ms` with "
        "the roofline and projected times here; on a pod, `experiments.train` on configs/celeba.py "
        "logs steps per second to compare with the v4-32 row.",
        "",
        "How the figures are made (experiments/roofline.py):",
        "",
        "* FLOPs and bytes accessed per step come from `compiled.cost_analysis()` of the "
        "per-device program ('flops', 'bytes accessed'), compiled for one device of this "
        "machine's CPU backend. FLOPs are the model's (XLA counts 2 per multiply-add of a "
        "convolution or matmul, only over valid, unpadded taps), the same on any backend. Bytes "
        "follow XLA:CPU's fusion decisions; XLA:GPU and XLA:TPU fuse more element-wise work into "
        "convolutions, so their traffic is lower and the intensities here are conservative "
        "(lower bounds). The 'fused' columns count instead only the bytes of the "
        "convolutions and dots (their operands and results, from the optimised HLO, "
        "`matmul_bytes`): the traffic if every other op were fused into them, so an upper "
        "bound on the intensity. The truth on an accelerator lies between the two.",
        "* Roofline time = max(FLOPs / peak, bytes / bandwidth); intensity = FLOPs / bytes; "
        "ridge = peak / bandwidth; a step is compute-bound when intensity >= ridge.",
        f"* Peak for a `{report.dtype}` model: jax's default matmul precision runs float32 "
        "matmuls and convolutions as TF32 on A100/H100 and as one-pass bfloat16 on the TPU MXU, "
        "so a float32 model gets the TF32 (GPU) or bfloat16 (TPU) peak; with "
        "`precision='highest'` it would get the fp32 column (TPU: bf16 / 6, six passes).",
        "* Projected time = max(FLOPs / (efficiency x peak), bytes / bandwidth), efficiency = "
        "this CPU's achieved FLOP/s for the same step / its dense-matmul rate: it assumes the "
        "accelerator reaches the same fraction of its peak as XLA:CPU does of its own. That is a "
        "rough assumption (small convolutions usually reach a lower fraction of a tensor core's "
        "peak than of a CPU's), so read the roofline column as a lower bound and the projected "
        "one as an estimate.",
        f"* The recipe: {recipe.base_steps:,} base steps at batch {recipe.batch}, "
        f"{recipe.n_critic} energy steps per base step and {recipe.n_critic_warmup} before base "
        f"steps 0, {recipe.warmup_every}, ... (the paper's schedule, configs/default.py): "
        f"{energy_steps:,} energy + {base_steps:,} base steps. Evaluation (FID, sampling) is "
        "left out. On the pod slice each chip holds batch "
        f"{recipe.batch // recipe.pod_chips} (data-parallel) and every step adds a ring "
        "all-reduce of the float32 gradients (energy parameters and A for an energy step, "
        "generator parameters for a base step) at the per-chip all-reduce bandwidth in the "
        "device table; latency, BatchNorm statistics and the host input pipeline are left out.",
        "* Left out everywhere: per-op overheads. XLA:CPU's energy step has several hundred "
        "fused ops; at a few microseconds per GPU kernel launch that is of the order of a "
        "millisecond per step, comparable to the roofline times at small per-device batches.",
    ]
    out += [f"* {note}" for note in report.notes]
    out += ["", "## Devices", ""] + device_table(report.devices)
    out += ["", f"## Recipe time ({report.dtype})", ""]
    out += recipe_table(report.costs, report.param_bytes, setups, report.dtype,
                        report.efficiency, recipe)
    out += ["", f"## Per step at per-device batch {report.step_batch} ({report.dtype})", ""]
    out += step_table(step_costs, report.devices, report.dtype, report.efficiency)
    out += ["", "## Smallest compute-bound per-device batch",
            "",
            "The smallest scanned per-device batch from which on the step's intensity stays at or "
            "above the device's ridge point (below it the step is memory-bound: a smaller "
            f"per-device batch no longer uses the {report.dtype} peak), with XLA:CPU's bytes / "
            "with the convs-and-dots-only bytes. 'none <= B': memory-bound up to the largest "
            "scanned batch B.", ""]
    out += bound_table(report.costs, report.devices, report.dtype)
    out += ["", "## XLA cost analysis per step", ""] + cost_table(report.costs)
    return "\n".join(out) + "\n"
