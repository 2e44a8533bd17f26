"""Shared test helpers: a readable float64 reference of docs/method/loss.md, tiny HF models, helpers that
start, wait for and kill a child process, and the list of slow tests.

    python -m pytest -m "not slow" -q       # the edit loop
    python -m pytest -q                     # everything (CI)

A test is slow when it runs a training stage, a grid, a subprocess launch or a distributed run end to
end (more than about 5 s here). They are listed once, in SLOW below (a file, or a file's test name, or
a node id with its parameters), and marked by the collection hook; a test file may also use
`@pytest.mark.slow` itself.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

SLOW_FILES = {
    "test_distributed.py",  # torchrun launches
    "test_rl_dist.py",
    "test_reproduce.py",  # whole grids
    "test_lm_eval.py",
    "test_hf_integrations.py",  # TRL SFTTrainer, PEFT
    "test_rl.py",  # RL runs
}
"""Test files that are slow as a whole (with -m "not slow" they are not even imported)."""
SLOW = {
    "test_train.py::test_pretrain_then_midtrain_through_the_cli",
    "test_train.py::test_beta_orders_the_entropy_at_equal_steps",
    "test_train.py::test_sigkill_then_resume_gives_the_same_loss_curve",
    "test_train.py::test_sigint_saves_a_checkpoint_and_exits_cleanly",
    "test_control.py::test_auto_beta_resumes_exactly_in_train_lm",
    "test_tasks_code.py::test_all_164_canonical_solutions_pass",
    "test_readiness.py::test_readiness_on_our_checkpoint_and_on_a_foreign_model",
    "test_readiness.py::test_readiness_against_references_caches_and_correlates",
    "test_grid_workers.py::test_workers_stop_when_the_scheduler_is_killed",
    "test_grid_workers.py::test_a_second_reproduce_on_the_same_folder_is_refused",
    "test_eval.py::test_eval_on_code_logic_and_a_user_file",
    "test_tasks_splits.py::test_the_grid_evaluation_never_scores_a_prompt_rl_or_tuning_sees",
    # measured over 4 s each (pytest --durations, 2 shared cores)
    "test_control.py::test_entropy_settles_within_10_percent_of_targets_on_both_sides_of_ce",
    "test_report_render.py::test_report_renders_from_fixture_metrics",
    "test_report_render.py::test_runs_csv_holds_the_values_the_checks_pair",
    "test_report_render.py::test_knowledge_is_called_recall_never_held_out",
    "test_report_render.py::test_report_has_an_auto_row_when_the_grid_runs_auto",
    "test_report_render.py::test_one_seed_grids_give_only_not_tested",
    "test_report_stats.py::test_absence_tests_keep_the_family_error_at_5_percent",
    "test_report_plan.py::test_the_plain_recheck_agrees_with_the_report",
    "test_trust.py::test_folder_without_checkpoint_can_start_again_or_resume",
    "test_cli.py::test_console_script_module_entry",
    "test_readme.py::test_python_example_runs",
    "test_release.py::test_loss_and_hf_import_no_heavy_package",
    "test_release.py::test_a_command_without_its_extra_says_so_in_one_line",
    "test_release.py::test_one_version",
    "test_data.py::test_corpora_deterministic_by_seed",
    "test_data.py::test_read_texts_formats",
    "test_data.py::test_reasoning_share_midtrain_above_pretrain",
    "test_eval.py::test_eval_writes_results_and_prints_the_table",
    "test_world.py::test_deterministic_by_seed",
    "test_world.py::test_bpe_at_v8192_keeps_general_words_whole",
    "test_world.py::test_small_space_is_finite_and_tasks_report_their_size",
    "test_train.py::test_loss_falls_when_overfitting_one_batch",
    "test_gpu_check.py::test_without_cuda_it_exits_at_once_with_one_line",
    "test_tasks_gym.py::test_every_dataset_scores_its_reference",
    "test_tasks_code.py::test_hung_crashing_and_hostile_completions_score_zero",
    "test_tasks_math.py::test_adversarial_answers_are_bounded",
    "test_tasks_math.py::test_the_hard_bound_kills_a_slow_worker_and_a_fresh_one_serves_next",
    "test_tasks.py::test_exhausted_space_says_so",
    "test_config_docs.py::test_every_field_is_on_the_page_with_its_docstring",
    "test_layers.py::test_report_and_rundir_load_no_torch",
    "test_hf.py::test_transformers_trainer_runs_with_compute_loss_func",
    "test_eval.py::test_held_out_text_follows_the_models_world",
    "test_release.py::test_the_check_can_see_a_heavy_import",
}
"""Tests that are slow: "file.py::test_name" (every parametrisation) or a node id with parameters."""


def pytest_ignore_collect(collection_path, config):
    """With -m "not slow", files that are slow as a whole are not imported (their imports cost seconds)."""
    if config.getoption("markexpr", "").replace(" ", "") == "notslow" and collection_path.name in SLOW_FILES:
        return True
    return None


def pytest_collection_modifyitems(config, items):
    """Mark every test of SLOW_FILES and SLOW as `slow` (one place, not a decorator in each file)."""
    for item in items:
        file = Path(str(item.fspath)).name
        name = f"{file}::{item.originalname}"
        if file in SLOW_FILES or name in SLOW or item.nodeid.split("/")[-1] in SLOW:
            item.add_marker(pytest.mark.slow)


def spawn_cli(*args: object, stderr=subprocess.PIPE, env: dict | None = None) -> subprocess.Popen:
    """`python -m shapedce ARGS` as a child process: stdout dropped, stderr kept (for `wait_for`'s report)."""
    cmd = [sys.executable, "-m", "shapedce", *map(str, args)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr, env=env)


def wait_for(predicate: Callable[[], bool], proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Poll `predicate` until it holds; fail if `proc` ends first (with its stderr) or time runs out."""
    deadline = time.time() + timeout
    while not predicate():
        if proc.poll() is not None:
            err = proc.stderr.read().decode()[-500:] if proc.stderr else ""
            raise AssertionError(f"the process ended early (exit {proc.returncode}): {err}")
        assert time.time() < deadline, "timed out waiting for the process"
        time.sleep(0.02)


def kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Send `sig` (default SIGKILL) to `proc` and reap it."""
    proc.send_signal(sig)
    proc.wait()


def reference_rows(logits, targets, *, beta=0.0, lambda_top=0.0, lambda_tail=0.0, k=100, ignore_index=-100):
    """Per-position surrogate loss written straight from docs/method/loss.md, in float64 autograd.

    w and lam are detached; w takes the limits of docs/method/loss.md where pi_x is exactly 1 in float64.
    Returns (rows [N], valid mask [N]).
    """
    z = logits.reshape(-1, logits.shape[-1]).double()
    x = targets.reshape(-1)
    valid = x != ignore_index
    x = torch.where(valid, x, 0)
    vocab = z.shape[-1]
    pi = torch.softmax(z, -1)
    log_pi = torch.log_softmax(z, -1)
    pi_x = pi.gather(1, x[:, None]).squeeze(1).detach()
    one_minus = (1 - pi_x).clamp_min(0)
    if beta == math.inf:
        w = pi_x
    elif beta == 0:
        w = torch.ones_like(pi_x)
    else:
        limit = math.e if beta == -1 else 1.0
        w = torch.where(
            one_minus == 0, torch.full_like(pi_x, limit), pi_x ** (1 - one_minus.clamp_min(1e-300) ** beta)
        )
    kth = torch.topk(z.detach(), min(k, vocab), -1).values[:, -1:]
    in_top = z.detach() >= kth
    lam = torch.where(
        in_top, torch.tensor(lambda_top, dtype=z.dtype), torch.tensor(lambda_tail, dtype=z.dtype)
    )
    lam = lam.scatter(1, x[:, None], 0.0)
    rows = -(w * log_pi.gather(1, x[:, None]).squeeze(1) + (lam * pi).sum(-1))
    return torch.where(valid, rows, 0.0), valid


def reference_loss(logits, targets, reduction="mean", **knobs):
    rows, valid = reference_rows(logits, targets, **knobs)
    if reduction == "none":
        return rows.reshape(targets.shape)
    return rows.sum() / max(int(valid.sum()), 1) if reduction == "mean" else rows.sum()


def tiny_qwen3(moe: bool = False, vocab: int = 97, seed: int = 0):
    from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

    torch.manual_seed(seed)
    common = dict(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    if moe:
        cfg = Qwen3MoeConfig(
            **common,
            moe_intermediate_size=16,
            num_experts=4,
            num_experts_per_tok=2,
            output_router_logits=True,
            router_aux_loss_coef=0.01,
            decoder_sparse_step=1,
        )
        model = Qwen3MoeForCausalLM(cfg)
    else:
        model = Qwen3ForCausalLM(Qwen3Config(**common, intermediate_size=64))
    return model.float()


def untrained_model_dir(path, vocab_size: int = 320, max_positions: int = 256):
    """PATH holding an untrained `tiny` model and a tokenizer trained on the built-in corpus: a model
    folder for tests of loading, evaluation and RL that need no trained weights."""
    from shapedce.data.corpus import builtin_corpus
    from shapedce.data.tokenizer import train_tokenizer
    from shapedce.models import build_model

    tok = train_tokenizer(builtin_corpus("pretrain-v2", 60), vocab_size=vocab_size)
    build_model("tiny", vocab_size=len(tok), seed=0, max_position_embeddings=max_positions).save_pretrained(
        path
    )
    tok.save_pretrained(path)
    return path


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def sigint_ignored():
    """SIGINT ignored, as a non-interactive shell starts a background job (`cmd &`)."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    yield
    signal.signal(signal.SIGINT, previous)
