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

_KERNELS = ("ula", "mala", "hmc", "kla")


def samplers(s: Dict[str, Any]) -> List[str]:
    """The samplers claim: per data set and beta, each kernel's level (mean of the metric over the
    second half of the budget ± its standard error), then the step sizes and acceptance rates."""
    if "datasets" not in s:
        return ["(section written by an earlier version of the claim; rerun "
                "`python -m experiments.claims --claim=samplers`)"]
    lines = [f"{s['gradient_budget']} gradient evaluations per chain; level = mean of the metric "
             "over the second half of the run ± s.e.; KLA ok = KLA's level within 2 s.e. of the "
             "best kernel's.", "",
             "| data: metric | beta | at start | ULA | MALA | HMC | KLA | authors' KLA preset "
             "| KLA ok |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    steps = ["| data | beta | step ULA, MALA | acc. MALA | leapfrog step HMC, KLA | acc. HMC |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, e in s["datasets"].items():
        better = "lower" if e["goal"] == "min" else "higher"
        for key in ("beta1", "tempered"):
            p = e["panels"][key]
            beta = f"{p['beta']:g}" + (f" ({e['tempered_beta_source']})" if key == "tempered"
                                       else "")
            authors = "—"
            if key == "tempered":
                a = e["authors_kla"]
                authors = (f"{_g(a['level_second_half'], a['level_se'])} "
                           f"(beta {a['beta']:g}, {a['num_steps']} steps)")
            cells = [f"{name}: {e['metric_name']} ({better} is better)", beta,
                     _g(e["metric_at_start"])]
            cells += [_g(p[k]["level_second_half"], p[k]["level_se"]) for k in _KERNELS]
            cells += [authors, _f(p["kla_within_2se_of_best"])]
            lines.append("| " + " | ".join(cells) + " |")
            steps.append(f"| {name} | {p['beta']:g} | {_g(p['step_sizes']['mala'])} | "
                         f"{_g(p['mala']['acceptance_rate'])} | {_g(p['step_sizes']['hmc'])} | "
                         f"{_g(p['hmc']['acceptance_rate'])} |")
    missing = s.get("datasets_missing")
    return lines + [""] + steps + ([f"\nLeft out (not trained by a seeded claim): {missing}."]
                                   if missing else [])


_MODELS = {"base": "base", "gebm_beta1": "GEBM, beta = 1", "gebm_chosen": "GEBM, chosen beta",
           "gan": "GAN", "ebm": "EBM (data space)", "truth": "truth (fresh draws)"}


def _pair_name(pair: str) -> str:
    a, b = pair.split("_minus_")
    return f"{_MODELS.get(a, a)} − {_MODELS.get(b, b)}"


def seeded(s: Dict[str, Any]) -> List[str]:
    """A seeded comparison (ring, grid, curve, ...): each model's mean ± s.e. over seeds of every
    metric, the betas chosen on validation, and the paired differences with z = mean / s.e."""
    metrics = list(s["summary"]["base"])
    head = " | ".join(metrics)
    chosen = ", ".join(f"{r['chosen_beta']:g}" for r in s["per_seed"])
    lines = [f"Seeds {s['seeds']}, mean ± s.e. over seeds; headline metric "
             f"{s['headline_metric']}; beta chosen on validation chains "
             f"(by {s['per_seed'][0]['select_by']}, among {s['betas']}) per seed: {chosen}.", "",
             f"| model | {head} |", "|---|" + "---:|" * len(metrics)]
    for model, row in s["summary"].items():
        lines.append(f"| {_MODELS.get(model, model)} | "
                     + " | ".join(_g(row[m]["mean"], row[m]["se"]) for m in metrics) + " |")
    lines += ["", f"| paired difference (same seed) | {head} |", "|---|" + "---:|" * len(metrics)]
    for pair, row in s["paired"].items():
        cells = [_g(row[m]["mean"], row[m]["se"])
                 + (f" (z {row[m]['z']:.3g})" if row[m].get("z") is not None else "")
                 for m in metrics]
        lines.append(f"| {_pair_name(pair)} | " + " | ".join(cells) + " |")
    targets = ", ".join(f"{k}: {_f(v)}" for k, v in s.get("targets", {}).items())
    if targets:
        lines.append(f"\nTargets (z beyond 3 in the better direction): {targets}.")
    return lines


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
            out += samplers(section)
        elif "summary" in section and "paired" in section:
            out += seeded(section)
        elif claim == "gan":
            out += ["| data | KALE base MMD² | KALE GEBM MMD² | GAN generator MMD² | "
                    "KALE GEBM within 3 std | GAN within 3 std | modes GEBM / GAN |",
                    "|---|---:|---:|---:|---:|---:|---|"]
            for name in [n for n in ("ring", "grid", "digits") if n in section]:
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
