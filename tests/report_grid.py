"""A report grid written by hand for the report tests: per-seed metrics files shaped like a finished
`shapedce reproduce` folder, and numbers shaped like the paper's findings.

    from report_grid import make_grid, paper_like
"""

from __future__ import annotations

import json
import math

import numpy as np
import yaml

from shapedce.report.verdicts import judged_findings


def eval_results(avg: float, entropy: float, ppl: float, m: int = 8, prompts: int = 40) -> dict:
    correct = round(avg * m * prompts)
    counts = [m] * (correct // m) + ([correct % m] if correct % m else [])
    counts += [0] * (prompts - len(counts))
    curve = {
        str(k): sum(
            1.0 - math.prod(1 - k / i for i in range(m - c + 1, m + 1)) if m - c >= k else 1.0 for c in counts
        )
        / prompts
        for k in (1, 2, 4, 8)
    }
    task = {
        "prompts": prompts,
        "samples": m,
        "avg_at_m": sum(counts) / (m * prompts),
        "cons_at_m": avg,
        "pass_at_k": curve,
        "correct_per_prompt": counts,
        "response_length": {"mean": 50.0},
    }
    return {
        "schema_version": 1,
        "tasks": {"arith-compare": task, "knowledge": dict(task, correct_per_prompt=None)},
        "text": {"ppl": ppl, "entropy_mean": entropy, "tail_mass": 0.01},
    }


def make_grid(root, spec: dict[str, list[dict]], models=("tiny",), moe=("tiny-moe",)):
    """spec: config -> per seed {ppl, entropy, mid_avg, rl_avg, rl_h: (start, end), length: (start, end)}."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "grid.yaml").write_text(
        yaml.safe_dump(
            {
                "configs": ",".join(spec),
                "models": ",".join(models),
                "seeds": len(next(iter(spec.values()))),
                "eval_samples": 8,
                "eval_tasks": "knowledge,arith-compare",
            }
        )
    )
    for model in models:
        for config, seeds in spec.items():
            for seed, v in enumerate(seeds):
                run = root / "runs" / model / config / f"s{seed}"
                for stage in ("pretrain", "midtrain", "rl"):
                    (run / stage / "eval").mkdir(parents=True)
                    (run / stage / "final").mkdir()
                    hf = {"num_local_experts": 4, "num_experts_per_tok": 2} if model in moe else {}
                    (run / stage / "final" / "config.json").write_text(json.dumps(hf))
                    rows = []
                    if stage == "rl":
                        for step in range(1, 9):
                            f = (step - 1) / 7
                            rows.append(
                                {
                                    "stage": "rl",
                                    "step": step,
                                    "tokens": step,
                                    "split": "train",
                                    "reward": 0.1 * f,
                                    "entropy": v["rl_h"][0] + f * (v["rl_h"][1] - v["rl_h"][0]),
                                    "response_length": v["length"][0] + f * (v["length"][1] - v["length"][0]),
                                }
                            )
                        rows.append(
                            {
                                "stage": "rl",
                                "step": 8,
                                "tokens": 8,
                                "split": "val",
                                "avg_at_k": v["rl_avg"],
                                "cons_at_k": v["rl_avg"],
                                "pass_at_k": v["rl_avg"],
                            }
                        )
                    else:
                        rows += [
                            {
                                "stage": stage,
                                "step": s,
                                "tokens": 100 * s,
                                "split": "val",
                                "ppl": v["ppl"] + 0.1 / s,
                                "entropy": v["entropy"],
                                "tail_mass": v.get("tail_mass", 0.2),
                            }
                            for s in (1, 2, 3)
                        ]
                    (run / stage / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
                    avg = v["rl_avg"] if stage == "rl" else v.get("mid_avg", 0.1)
                    (run / stage / "eval" / "results.json").write_text(
                        json.dumps(eval_results(avg, v["entropy"], v["ppl"]))
                    )
                (run / "timings.json").write_text(json.dumps({"pretrain": 60.0, "rl": 30.0}))
    return root


def paper_like(n_seeds: int, noise: float = 0.001, seed: int = 0):
    """Numbers shaped like the paper's findings, with small independent noise per config, seed and value."""
    rng = np.random.default_rng(seed)

    def cfg(ppl, h, mid_avg, rl_avg, rl_h, length, tail_mass=0.2):
        def e(scale=1.0):
            return float(rng.normal(0.0, noise * scale))

        return [
            dict(
                ppl=ppl + e(),
                entropy=h + e(),
                tail_mass=tail_mass + e(),
                mid_avg=mid_avg + e(4),
                rl_avg=rl_avg + e(4),
                rl_h=(rl_h[0] + e(), rl_h[1] + e()),
                length=(length[0] + 100 * e(), length[1] + 100 * e()),
            )
            for _ in range(n_seeds)
        ]

    return {
        "ce": cfg(2.00, 1.00, 0.10, 0.300, (1.0, 0.8), (60, 58)),
        "precision": cfg(2.02, 0.90, 0.10, 0.400, (0.9, 0.75), (60, 59)),
        "diversity": cfg(1.99, 1.20, 0.05, 0.250, (1.3, 0.6), (60, 40)),
        "tail": cfg(2.01, 0.98, 0.10, 0.380, (1.0, 0.8), (60, 58), tail_mass=0.18),
        "head": cfg(2.03, 1.02, 0.10, 0.300, (1.0, 0.8), (60, 58)),
    }


def by_finding(grid) -> dict[str, object]:
    return {f.id.split(":")[1]: f for f in judged_findings(grid)}
