"""The GRPO pieces of docs/method/pipeline.md as plain torch functions: advantages, the group filter,
per-token log-probabilities and the token-level clip-higher loss. No trainer, no TRL.

    from shapedce.train.grpo import group_advantages, informative, token_logps, clipped_loss
    adv = group_advantages(rewards)                      # rewards [groups, G] -> [groups, G]
    loss, stats = clipped_loss(logp, old_logp, adv_rows, mask, 0.2, 0.28, num_tokens)

Try it on a CPU: python -m pytest tests/test_rl_loss.py -q

The loss, for the rows of one mini-batch (a slice of one process's share when distributed):

    L = - (1 / N) * sum_i sum_t mask_{i,t} * min(rho A_i, clip(rho, 1 - eps_low, 1 + eps_high) A_i)

with rho = exp(logp - old_logp) and N the completion-token count of the whole mini-batch over
all processes (token-level aggregation: every token weighs the same, whatever its sequence's
length). No KL term, no reference model. A token is "clipped" where the min picks the clipped
term with a different value, so its gradient is zero: low where A < 0 and rho < 1 - eps_low,
high where A > 0 and rho > 1 + eps_high.
"""

from __future__ import annotations

import torch

from ..hf.tokens import lm_token_head

ADV_EPS = 1e-4
"""A_i = (r_i - mean) / (std + ADV_EPS), std with Bessel's correction (as TRL and the GRPO paper)."""


def group_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """[groups, G] rewards -> [groups, G] advantages, scaled within each group."""
    r = rewards.double()
    return ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + ADV_EPS)).float()


def informative(rewards: torch.Tensor) -> torch.Tensor:
    """[groups] bool: True where a group's rewards are not all equal (dynamic sampling keeps those)."""
    return (rewards.max(1).values - rewards.min(1).values).abs() > 1e-6


def token_logps(
    model, prompt_ids: list[list[int]], completion_ids: list[list[int]], pad: int, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log pi(o_t | q, o_<t) [rows, T], completion mask [rows, T]) of each (prompt, completion) pair,
    left-padded prompts and right-padded completions in one forward; logits divided by `temperature`
    (the policy that sampled). Position ids follow the attention mask, as the sampler's do. The
    log-probs come from the fused per-token head (`shapedce.hf.tokens`): no [rows, T, V] logits;
    padded positions give 0 (and no gradient)."""
    device = next(model.parameters()).device
    pw, cw = max(map(len, prompt_ids)), max(max(map(len, completion_ids)), 1)
    rows = len(prompt_ids)
    ids = torch.full((rows, pw + cw), pad, dtype=torch.long)
    att = torch.zeros((rows, pw + cw), dtype=torch.long)
    for i, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
        ids[i, pw - len(p) : pw] = torch.tensor(p, dtype=torch.long)
        ids[i, pw : pw + len(c)] = torch.tensor(c, dtype=torch.long)
        att[i, pw - len(p) : pw + len(c)] = 1
    ids, att = ids.to(device), att.to(device)
    pos = (att.cumsum(-1) - 1).clamp_min(0)
    target = ids[:, pw:].masked_fill(att[:, pw:] == 0, -100)  # padding is not scored
    scored = torch.arange(pw - 1, pw + cw - 1, device=device).expand(rows, cw)  # position t predicts t + 1
    logp = lm_token_head(
        model, ids, att, target, position_ids=pos, positions=scored, temperature=temperature
    ).logp
    return logp, att[:, pw:].float()


def clipped_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    eps_low: float,
    eps_high: float,
    num_tokens: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of docs/method/pipeline.md over these rows, divided by `num_tokens` (the mini-batch's
    count over all processes). adv: [rows]; mask: [rows, T] (0 for padding and masked-out completions).
    Returns (loss, sums: tokens, clipped_low, clipped_high) — sums over these rows, to be added up."""
    rho = torch.exp(logp - old_logp)
    a = adv[:, None].to(logp.dtype)
    terms = torch.minimum(rho * a, rho.clamp(1 - eps_low, 1 + eps_high) * a)
    loss = -(terms * mask).sum() / max(float(num_tokens), 1.0)
    with torch.no_grad():
        low = ((a < 0) & (rho < 1 - eps_low)).float() * mask
        high = ((a > 0) & (rho > 1 + eps_high)).float() * mask
        stats = {
            "tokens": float(mask.sum()),
            "clipped_low": float(low.sum()),
            "clipped_high": float(high.sum()),
        }
    return loss, stats
