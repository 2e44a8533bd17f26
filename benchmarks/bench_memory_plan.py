"""How close `shapedce plan` is to measured peaks: training steps on CPU, one subprocess each.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_memory_plan.py            # ~2 min on 2 cores
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_memory_plan.py --markdown # the docs table

Each case runs in a fresh process (peak RSS is per process): after the imports the resident set is
read (the baseline), then the model is built and two optimizer steps of pre-training (patched model,
fused shaped loss, AdamW) or one RL step (`grpo.token_logps` + the clipped loss's backward, no
optimizer) run; the measured peak is VmHWM (peak RSS) minus the baseline. The plan is the same
configuration's `shapedce.train.plan` peak for one float32 CPU process: for pre-training the
largest of its forward, backward and optimizer-step phases, for RL the larger of its head-backward
and backward phases without the optimizer (this step has none). The ratio is plan / measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CASES = [  # (kind, flavor, vocab, micro_batch, seq_len / completion length, checkpointing)
    ("pretrain", "tiny", 2048, 8, 256, False),
    ("pretrain", "small", 8192, 8, 512, False),
    ("pretrain", "small", 8192, 8, 512, True),
    ("pretrain", "small", 32768, 4, 1024, False),
    ("pretrain", "small-moe", 8192, 4, 512, False),
    ("rl", "tiny", 151936, 8, 1024, False),
    ("rl", "small", 32768, 8, 512, False),
    ("rl", "small", 32768, 8, 512, True),
    # not used to calibrate the backward constants (see docs/guides/scaling.md):
    ("pretrain", "small", 8192, 2, 2048, True),
    ("pretrain", "tiny-moe", 2048, 16, 256, False),
    ("rl", "tiny", 32768, 4, 2048, True),
]
RL_PROMPT = 32


def rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def run_config(kind, flavor, vocab, micro, length, ckpt):
    from shapedce.config import load_config

    over = [
        f"model.flavor={flavor}",
        f"model.vocab_size={vocab}",
        f"data.seq_len={length}",
        f"train.micro_batch={micro}",
        f"train.global_batch_tokens={micro * length}",
        f"train.activation_checkpointing={str(ckpt).lower()}",
        "train.device=cpu",
        "model.max_position_embeddings=4096",
    ]
    return load_config("smoke", over)


def planned(kind, flavor, vocab, micro, length, ckpt) -> float:
    from shapedce.train.plan import plan_lm, plan_rl, run_shape
    from shapedce.train.rl_config import load_rl_config

    cfg = run_config(kind, flavor, vocab, micro, length, ckpt)
    shape = run_shape(cfg)
    if kind == "pretrain":
        return plan_lm(cfg, shape, 1, "cpu", "ddp").peak
    rl = load_rl_config(
        "smoke",
        [
            f"micro_batch={micro}",
            f"max_completion_length={length}",
            f"activation_checkpointing={str(ckpt).lower()}",
        ],
    )
    plan = plan_rl(rl, shape, 1, "cpu", prompt_tokens=RL_PROMPT)
    live = ("parameters", "gradients", "activations", "attention_mask")  # no optimizer in this step
    return max(sum(plan.terms[t] for t in (*live, last)) for last in ("logprob_head", "backward_transient"))


def child(kind, flavor, vocab, micro, length, ckpt, unfused: bool = False) -> dict:
    """Run one case in this process; returns the measured peak growth in bytes."""
    import torch

    from shapedce.hf import patch_causal_lm
    from shapedce.models import build_model
    from shapedce.train.grpo import clipped_loss, token_logps
    from shapedce.train.memory import set_activation_checkpointing

    torch.manual_seed(0)
    base = rss_kib("VmRSS")
    t0 = time.perf_counter()
    model = build_model(flavor, vocab_size=vocab, max_position_embeddings=4096).train()
    set_activation_checkpointing(model, ckpt)
    g = torch.Generator().manual_seed(0)
    if kind == "pretrain":
        patch_causal_lm(model, "ce")
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        batch = torch.randint(0, vocab, (micro, length + 1), generator=g)
        for _ in range(2):
            model(input_ids=batch[:, :-1], shift_labels=batch[:, 1:]).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    else:
        prompts = torch.randint(1, vocab, (micro, RL_PROMPT), generator=g).tolist()
        completions = torch.randint(1, vocab, (micro, length), generator=g).tolist()
        logps = unfused_logps if unfused else token_logps
        logp, mask = logps(model, prompts, completions, 0, 1.0)
        adv = torch.linspace(-1, 1, micro)
        loss, _ = clipped_loss(logp, logp.detach() + 0.05, adv, mask, 0.2, 0.28, float(mask.sum()))
        loss.backward()
    return {
        "measured": (rss_kib("VmHWM") - base) * 1024,
        "peak_rss": rss_kib("VmHWM") * 1024,
        "seconds": time.perf_counter() - t0,
    }


def unfused_logps(model, prompt_ids, completion_ids, pad, temperature=1.0):
    """The log-probs as computed before the fused head: full [rows, T, V] float32 logits."""
    import torch

    pw, cw = max(map(len, prompt_ids)), max(map(len, completion_ids))
    ids = torch.full((len(prompt_ids), pw + cw), pad, dtype=torch.long)
    att = torch.zeros_like(ids)
    for i, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
        ids[i, pw - len(p) : pw], ids[i, pw : pw + len(c)] = torch.tensor(p), torch.tensor(c)
        att[i, pw - len(p) : pw + len(c)] = 1
    pos = (att.cumsum(-1) - 1).clamp_min(0)
    out = model(input_ids=ids, attention_mask=att, position_ids=pos, logits_to_keep=cw + 1)
    logits = out.logits[:, -cw - 1 : -1].float()
    logp = torch.log_softmax(logits / temperature, -1).gather(-1, ids[:, pw:, None]).squeeze(-1)
    return logp, att[:, pw:].float()


def measure(case, unfused: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps([*case, unfused])]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*json.loads(args.child))))
        return
    rows = []
    for case in CASES:
        got = measure(case)
        plan = planned(*case)
        rows.append((case, plan, got["measured"]))
    mib = 1024**2
    if args.markdown:
        print(
            "| stage | flavor | V | rows x tokens | checkpointing | plan MiB | measured MiB | plan / meas. |"
        )
        print("|---|---|---|---|---|---|---|---|")
    else:
        head = ("stage", "flavor", "V", "rows x T", "ckpt", "plan MiB", "meas MiB", "ratio")
        print("{:<9}{:<10}{:>7}{:>11}{:>6}{:>10}{:>10}{:>7}".format(*head))
    for (kind, flavor, vocab, micro, length, ckpt), plan, got in rows:
        cells = (
            kind,
            flavor,
            vocab,
            f"{micro} x {length}",
            "yes" if ckpt else "no",
            plan / mib,
            got / mib,
            plan / got,
        )
        if args.markdown:
            print("| {} | {} | {} | {} | {} | {:.0f} | {:.0f} | {:.2f} |".format(*cells))
        else:
            print("{:<9}{:<10}{:>7}{:>11}{:>6}{:>10.0f}{:>10.0f}{:>7.2f}".format(*cells))


if __name__ == "__main__":
    main()
