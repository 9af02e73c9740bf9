r"""Prints the README's Results tables from claims.json: python -m experiments.claims.report.

    python -m experiments.claims.report [experiments/results/claims.json]

Numbers are read, never typed: the README's tables are this script's output.
"""
from __future__ import annotations

import json
import sys
from typing import Any, Dict, List


def _f(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if abs(value) < 1e-3 and value != 0:
        return f"{value:.2e}"
    return f"{value:.{digits}f}"


def _reused_training(section: Any) -> float:
    """Seconds of the trainings this section reused from earlier runs (train_reused)."""
    if isinstance(section, dict):
        own = section.get("train_seconds", 0.0) if section.get("train_reused") else 0.0
        return own + sum(_reused_training(v) for v in section.values() if isinstance(v, dict))
    return 0.0


def _g(value: Any, se: Any = None) -> str:
    """MMD-sized numbers with 3 significant digits, and their standard error when known."""
    if value is None:
        return "n/a"
    return f"{value:.3g}" + (f" ± {se:.2g}" if se is not None else "")


def _minutes(section: Dict[str, Any]) -> str:
    cpu = section.get("cpu_seconds")
    text = f"{section['seconds'] / 60:.1f} min wall"
    text += f", {cpu / 60:.1f} min CPU" if cpu is not None else ""
    reused = _reused_training(section)
    if reused:
        text += f"; plus {reused / 60:.1f} min wall of reused training"
    return text


def kale_vs_kl(s: Dict[str, Any]) -> List[str]:
    lines = ["| d | KL (closed form) | KALE quadratic (= KL in theory) | KALE linear "
             "(closed form 0.5) | KALE mlp |", "|---:|---:|---:|---:|---:|"]
    dims = sorted({r["dim"] for r in s["rows"]})
    for d in dims:
        row = {r["energy_class"]: r for r in s["rows"] if r["dim"] == d}
        cells = [f"{_f(row[c]['kale'])} ± {_f(row[c]['standard_error'])}"
                 for c in ("quadratic", "linear", "mlp")]
        lines.append(f"| {d} | {_f(row['quadratic']['kl'])} | " + " | ".join(cells) + " |")
    return lines


def evaluation_rows(name: str, r: Dict[str, Any], extra: bool = False) -> str:
    cells = [name, _g(r["mmd_true_vs_true"], r.get("mmd_true_vs_true_se")),
             _g(r["mmd_base"], r.get("mmd_base_se")), _g(r["mmd_gebm"], r.get("mmd_gebm_se"))]
    if extra:
        cells += [_f(r["true_share_within_3std"], 3), _f(r["base_share_within_3std"], 3),
                  _f(r["gebm_share_within_3std"], 3),
                  f"{r['base_modes_covered']} / {r['gebm_modes_covered']} of {r['num_modes']}"]
    cells.append(_f(r["gebm_acceptance"], 3))
    return "| " + " | ".join(cells) + " |"


def main(path: str) -> None:
    with open(path) as f:
        results = json.load(f)
    out: List[str] = []
    for claim, section in results.items():
        if claim == "flows":
            out += ["### flows", json.dumps(section), ""]
            continue
        out += [f"### {claim}: reproduces = {_f(section.get('reproduces'))} "
                f"({_minutes(section)}, tiny={section['tiny']})", f"`{section['command']}`", ""]
        if claim == "kale_vs_kl":
            out += kale_vs_kl(section)
        elif claim in ("sphere3d", "digits"):
            out += ["| data | MMD² true vs true (noise) | MMD² base | MMD² GEBM | MCMC acc. |",
                    "|---|---:|---:|---:|---:|", evaluation_rows(claim, section)]
            if claim == "sphere3d":
                out.append(f"\nThe true base alone (sphere3d's own base, no energy): MMD² "
                           f"{_g(section['mmd_true_base'])}.")
        elif claim == "modes":
            out += ["| data | MMD² noise | MMD² base | MMD² GEBM | true within 3 std | base | GEBM "
                    "| modes base / GEBM | MCMC acc. |",
                    "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
            out += [evaluation_rows(n, section[n], extra=True) for n in ("ring", "grid")]
        elif claim == "samplers":
            out += ["| data | metric | kernel | step size | acceptance | metric at 0 | "
                    "mean over 2nd half of budget |", "|---|---|---|---:|---:|---:|---:|"]
            for name in ("sphere3d", "ring"):
                c = section[name]
                for k in ("ula", "mala", "hmc", "kla"):
                    out.append(f"| {name} | {c['metric_name']} | {k.upper()} | "
                               f"{_f(c['step_sizes'][k])} | {_f(c[k]['acceptance_rate'], 3)} | "
                               f"{_g(c[k]['metric'][0])} | "
                               f"{_g(c[k]['level_second_half'], c[k]['level_se'])} |")
        elif claim == "gan":
            out += ["| data | KALE base MMD² | KALE GEBM MMD² | GAN generator MMD² | "
                    "KALE GEBM within 3 std | GAN within 3 std | modes GEBM / GAN |",
                    "|---|---:|---:|---:|---:|---:|---|"]
            for name in ("ring", "grid", "digits"):
                r = section[name]
                share = (_f(r.get("kale_gebm_share_within_3std"), 3),
                         _f(r.get("gan_base_share_within_3std"), 3))
                modes = (f"{r['kale_gebm_modes_covered']} / {r['gan_base_modes_covered']}"
                         if "kale_gebm_modes_covered" in r else "n/a")
                out.append(f"| {name} | {_g(r['kale_mmd_base'], r.get('kale_mmd_base_se'))} | "
                           f"{_g(r['kale_mmd_gebm'], r.get('kale_mmd_gebm_se'))} | "
                           f"{_g(r['gan_mmd_base'], r.get('gan_mmd_base_se'))} | {share[0]} | "
                           f"{share[1]} | {modes} |")
        out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "experiments/results/claims.json")
