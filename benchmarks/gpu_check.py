"""GPU acceptance check: one command, one CUDA GPU, under 8 minutes, one Markdown table.

    python benchmarks/gpu_check.py                   # all checks; exit 1 if any fails
    python benchmarks/gpu_check.py --only grad,sample --out /tmp/gpu_check
    python benchmarks/gpu_check.py --only paper_pre,paper_rl,paper_mp   # the paper shapes (>= 90 GiB)

Checks (each runs in its own subprocess with its own time limit, so a crash, a hang or a CUDA
error in one is reported in its row and the others still run):
  bench     the loss benchmark of benchmarks/bench_loss_gpu.py (its functions) at bf16, V=151936,
            H in {2560, 4096}, N=8192: time and peak memory of fused_ce / fused_precision /
            fused_tail as ratios to Liger-Kernel. Pass: fused_ce speed >= 0.9 x Liger and peak
            memory <= 1.0 x Liger (the issue's target); fails when liger-kernel is missing.
  grad      the fused loss in bf16 on the GPU (every paper setting, and a Gemma-style softcap)
            against the float64 reference on the same bf16 inputs: loss and the gradients of
            hidden / weight / bias. Pass: relative errors (norm of the difference / norm) < 2e-2.
  pretrain  `shapedce pretrain --preset smoke` under torchrun with one process, FSDP, bf16
            autocast on CUDA. Pass: exit 0, metrics.jsonl rows with finite losses.
  sample    `shapedce.eval.sample` (torch backend) of one random tiny model on CUDA and on the
            CPU with the same seeds (float32, TF32 off). Pass: >= 90% of sampled completions and
            of greedy completions identical token for token (the noise is tied to (seed, prompt,
            sample, step, token); only near-ties of the logits may flip).
  paper_pre one pre-training step pair of the 4B flavor at the `paper` preset's shape (4 x 4096
            tokens, activation checkpointing, bf16 autocast, AdamW) on one GPU; its peak
            (torch.cuda.max_memory_allocated) against `shapedce plan` for one unsharded process.
            Pass: within 25% of the plan (plan / measured in [0.8, 1.25]).
  paper_rl  one RL update of the 4B flavor at the `paper` RL preset's shape (micro_batch rows of
            512 prompt + 8192 completion tokens: token_logps, the clipped loss's backward, AdamW),
            against the plan's forward/backward phase. Same pass rule.
  paper_mp  paper_pre under FSDP2's bf16 MixedPrecisionPolicy (`shapedce.train.dist.fsdp_shard`,
            the path of every sharded bf16 run) on a one-rank process group, no autocast, against
            the plan with the policy's terms. Same pass rule. (benchmarks/gpu_paper.py)
  rl        `shapedce rl --preset smoke` from the pretrain run (or a 2-step run of its own when
            that one is missing) on CUDA. `shapedce rl` generates with TRL's own loop in one
            process (no vLLM path today); the row says whether vLLM is installed.
Without CUDA it exits at once with one line (exit 2).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from gpu_paper import check_paper_mp, check_paper_pre, check_paper_rl  # noqa: E402, F401 - run_one finds them

CHECKS = ("bench", "grad", "pretrain", "sample", "rl", "paper_pre", "paper_rl", "paper_mp")
DEFAULT = CHECKS[:5]
"""Run without --only; the paper shapes need a large GPU (one unsharded 4B model with AdamW: ~85 GiB)."""
LIMITS_S = {
    "bench": 120,
    "grad": 60,
    "pretrain": 120,
    "sample": 60,
    "rl": 150,
    "paper_pre": 120,
    "paper_rl": 120,
    "paper_mp": 150,
}
TOTAL_S = 470  # all checks together stay under 8 minutes (checks left over are reported as not run)
SETTINGS = {
    "ce": {},
    "precision": dict(beta=-0.25),
    "diversity": dict(beta=0.5),
    "tail": dict(lambda_tail=-0.1, k=100),
    "head": dict(lambda_top=0.1, k=100),
}


# --------------------------------------------------------------------------------- the checks
def check_bench(out: Path) -> tuple[bool, str]:
    sys.path.insert(0, str(HERE))
    import bench_loss_gpu as bench  # noqa: E402  (a sibling script, not a package)

    providers = bench._providers([None])
    if providers["liger_ce"] is None:
        return False, "liger-kernel is not installed (pip install -e '.[gpu]'): no ratios"
    figures, ok = [], True
    for hidden in (2560, 4096):
        g = torch.Generator(device="cuda").manual_seed(0)
        n = 8192
        h = (torch.randn(n, hidden, device="cuda", generator=g) * 0.5).bfloat16().requires_grad_()
        w = (
            (torch.randn(bench.VOCAB, hidden, device="cuda", generator=g) * hidden**-0.5)
            .bfloat16()
            .requires_grad_()
        )
        x = torch.randint(0, bench.VOCAB, (n,), device="cuda", generator=g)
        x[torch.rand(n, device="cuda", generator=g) < 0.05] = -100
        res = {
            name: bench.measure(providers[name], h, w, x, 1, 5)
            for name in ("liger_ce", "fused_ce", "fused_precision", "fused_tail")
        }
        ms0, mib0 = res["liger_ce"][0], res["liger_ce"][1]
        cells = [
            f"{name[6:]} {ms0 / ms:.2f}x speed / {mib / mib0:.2f}x mem"
            for name, (ms, mib, _) in res.items()
            if name != "liger_ce"
        ]
        figures.append(f"H={hidden}: liger {ms0:.1f} ms {mib0:.0f} MiB; " + ", ".join(cells))
        ok &= ms0 / res["fused_ce"][0] >= 0.9 and res["fused_ce"][1] <= 1.0 * mib0
        del h, w, x
        torch.cuda.empty_cache()
    return ok, "; ".join(figures)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def check_grad(out: Path) -> tuple[bool, str]:
    from shapedce.loss import fused_linear_shaped_cross_entropy, shaped_cross_entropy

    g = torch.Generator(device="cuda").manual_seed(1)
    n, hidden, vocab = 1024, 512, 151936
    h = (torch.randn(n, hidden, device="cuda", generator=g)).bfloat16()
    w = (torch.randn(vocab, hidden, device="cuda", generator=g) * 2 * hidden**-0.5).bfloat16()
    b = (torch.randn(vocab, device="cuda", generator=g) * 0.1).bfloat16()
    x = torch.randint(0, vocab, (n,), device="cuda", generator=g)
    x[::13] = -100
    worst, cases = (
        0.0,
        {**{k: (v, None) for k, v in SETTINGS.items()}, "tail+softcap30": (SETTINGS["tail"], 30.0)},
    )
    for _name, (knobs, cap) in cases.items():
        leaves = [t.clone().requires_grad_() for t in (h, w, b)]
        loss = fused_linear_shaped_cross_entropy(
            leaves[0], leaves[1], x, bias=leaves[2], softcap=cap, **knobs
        )
        got = [loss, *torch.autograd.grad(loss, leaves)]
        ref_leaves = [t.double().requires_grad_() for t in (h, w, b)]
        z = ref_leaves[0] @ ref_leaves[1].T + ref_leaves[2]
        z = z if cap is None else cap * torch.tanh(z / cap)
        ref_loss = shaped_cross_entropy(z, x, **knobs)
        want = [ref_loss, *torch.autograd.grad(ref_loss, ref_leaves)]
        worst = max(worst, *(_rel(a, c) for a, c in zip(got, want)))
        del z, ref_leaves
        torch.cuda.empty_cache()
    return (
        worst < 2e-2,
        f"{len(cases)} settings, N={n} H={hidden} V={vocab}: worst relative error {worst:.1e}",
    )


def _metrics_ok(run: Path) -> tuple[bool, str]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return False, f"no {path}"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    train = [r for r in rows if r.get("split") == "train"]
    ok = bool(train) and all(math.isfinite(r["loss"]) for r in rows)
    last = train[-1] if train else {}
    return (
        ok,
        f"{len(train)} train rows, last loss {last.get('loss', float('nan')):.3f}, grad_shift "
        f"{last.get('grad_shift', float('nan')):.3g}",
    )


def _shapedce(args: list[str], limit: float, torchrun: bool = False) -> subprocess.CompletedProcess:
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1"]
        if torchrun
        else [sys.executable]
    )
    return subprocess.run(launcher + ["-m", "shapedce", *args], capture_output=True, text=True, timeout=limit)


def _tail(proc: subprocess.CompletedProcess) -> str:
    return ((proc.stderr or proc.stdout).strip().splitlines() or ["?"])[-1][:120]


def check_pretrain(out: Path) -> tuple[bool, str]:
    run = out / "pretrain"
    t0 = time.perf_counter()
    proc = _shapedce(
        [
            "pretrain",
            "--preset",
            "smoke",
            "--out",
            str(run),
            "train.parallel=fsdp",
            "train.precision=bf16",
            "train.device=cuda",
        ],
        LIMITS_S["pretrain"] - 5,
        torchrun=True,
    )
    if proc.returncode != 0:
        return False, f"exit {proc.returncode}: {_tail(proc)}"
    ok, figures = _metrics_ok(run)
    return ok, f"torchrun x1, FSDP, bf16: {figures}; {time.perf_counter() - t0:.0f} s"


def check_sample(out: Path) -> tuple[bool, str]:
    from shapedce.data import builtin_corpus, train_tokenizer
    from shapedce.eval.sample import SamplingConfig, sample
    from shapedce.models import build_model

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    tok = train_tokenizer(builtin_corpus("pretrain-v2", 300), vocab_size=2048)
    model = build_model("tiny", seed=0).float().eval()
    prompts = ["Problem: What is 2 + 3?\n", "The city of", "Once upon a time", "Answer:"]
    figures, ok = [], True
    for label, temperature in (("T=1", 1.0), ("greedy", 0.0)):
        cfg = SamplingConfig(
            temperature=temperature, top_p=1.0 if temperature else 0.95, max_new_tokens=24, samples=8, seed=3
        )
        runs = []
        for device in ("cpu", "cuda"):
            with torch.no_grad():
                runs.append(sample(model.to(device), tok, prompts, cfg, backend="torch"))
        pairs = [(a.token_ids, b.token_ids) for ra, rb in zip(*runs) for a, b in zip(ra, rb)]
        same = sum(a == b for a, b in pairs) / len(pairs)
        figures.append(f"{label}: {same:.0%} of {len(pairs)} identical")
        ok &= same >= 0.9
    return ok, "; ".join(figures)


def check_rl(out: Path) -> tuple[bool, str]:
    import importlib.util

    start = time.perf_counter()
    base = out / "pretrain"
    if not (base / "final").exists():  # the pretrain check failed or did not run: a short run of our own
        base = out / "rl_base"
        proc = _shapedce(
            ["pretrain", "--preset", "smoke", "--out", str(base), "train.steps=2", "train.device=cuda"], 60
        )
        if proc.returncode != 0:
            return False, f"base pretrain: exit {proc.returncode}: {_tail(proc)}"
    left = LIMITS_S["rl"] - 5 - (time.perf_counter() - start)
    proc = _shapedce(
        ["rl", "--preset", "smoke", "--from", str(base), "--out", str(out / "rl"), "device=cuda"], left
    )
    vllm = "vLLM installed (not used by shapedce rl)" if importlib.util.find_spec("vllm") else "no vLLM"
    if proc.returncode != 0:
        return False, f"exit {proc.returncode}: {_tail(proc)}; {vllm}"
    return True, f"2 GRPO steps on CUDA in {time.perf_counter() - start:.0f} s; {vllm}"


# --------------------------------------------------------------------------------- the driver
def run_one(name: str, out: Path) -> None:
    """Child process: run one check, print one JSON line."""
    try:
        ok, figures = globals()[f"check_{name}"](out)
    except Exception as err:  # reported in the table: one check's failure must not hide the others
        ok, figures = False, f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
    print(json.dumps({"ok": bool(ok), "figures": figures}))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default=",".join(DEFAULT), help=f"comma-separated subset of {','.join(CHECKS)}")
    p.add_argument("--out", default="", help="work directory (default: a fresh temporary one)")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device (torch.cuda.is_available() is False); nothing checked")
        return 2
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        print(f"gpu_check: unknown check {unknown[0]!r}; choose from {', '.join(CHECKS)}")
        return 2
    out = Path(args.out or tempfile.mkdtemp(prefix="gpu_check_"))
    out.mkdir(parents=True, exist_ok=True)
    if args.child:
        run_one(args.child, out)
        return 0
    deadline = time.perf_counter() + TOTAL_S
    rows = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for name in names:
        limit = min(LIMITS_S[name], deadline - time.perf_counter())
        t0 = time.perf_counter()
        if limit < 10:
            rows.append((name, "FAIL", "not run: the 8-minute budget is spent"))
            continue
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--out", str(out)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, env=env)
            last = (proc.stdout.strip().splitlines() or [""])[-1]
            res = (
                json.loads(last)
                if last.startswith("{")
                else {
                    "ok": False,
                    "figures": f"exit {proc.returncode}: "
                    f"{(proc.stderr.strip().splitlines() or ['?'])[-1][:160]}",
                }
            )
        except subprocess.TimeoutExpired:
            res = {"ok": False, "figures": f"timed out after {limit:.0f} s"}
        rows.append(
            (name, "pass" if res["ok"] else "FAIL", f"{res['figures']} ({time.perf_counter() - t0:.0f} s)")
        )
    print(f"\n# gpu_check: {torch.cuda.get_device_name()}, torch {torch.__version__}, work dir {out}\n")
    print("| check | result | figures |\n|---|---|---|")
    for name, result, figures in rows:
        print(f"| {name} | {result} | {figures.replace('|', '/')} |")
    return 0 if all(r[1] == "pass" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
