"""Optional vLLM rollouts for `shapedce rl` on GPUs (`rollout_backend=vllm`, off by default): one vLLM
engine per training process, colocated on its GPU, refreshed with the policy's weights after each
generation batch's optimizer steps.

    pip install vllm
    torchrun --standalone --nproc-per-node 8 -m shapedce rl --from RUN-mid --out RUN-rl --preset paper \\
        rollout_backend=vllm vllm_gpu_memory=0.3

NOT RUN HERE: the development machine has neither vLLM nor a GPU; this is written against vLLM's
offline `LLM` API as TRL 1.16's colocate mode drives it (`distributed_executor_backend=
"external_launcher"` under torchrun, weights pushed through the engine's model `load_weights`).
Only the guard (a one-line error where vLLM or CUDA is missing) is tested. With vLLM the samples
come from vLLM's own random numbers (each prompt seeded from its draw number, so still independent
of which rank sampled it), entropy is vLLM's top-20 truncation (a lower bound), and 1-vs-N-process
equality holds only as far as vLLM's kernels are deterministic.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import UserError
from ..eval.sample import vllm_available


def check_vllm() -> None:
    """One-line UserError unless vLLM is importable and CUDA is available."""
    if not vllm_available():
        raise UserError(
            "rollout_backend=vllm needs vLLM installed and a CUDA device (pip install vllm); "
            "use rollout_backend=torch"
        )


class VLLMRollout:
    """A colocated `vllm.LLM` for this rank; `engine` is what `shapedce.eval.sample.sample` takes."""

    def __init__(self, model_dir: Path, gpu_memory: float, seed: int, distributed: bool):
        check_vllm()
        from vllm import LLM

        kwargs = {"distributed_executor_backend": "external_launcher"} if distributed else {}
        self.engine = LLM(
            model=str(model_dir),
            gpu_memory_utilization=gpu_memory,
            seed=seed,
            max_num_batched_tokens=4096,
            **kwargs,
        )

    @torch.no_grad()
    def push(self, model: torch.nn.Module) -> None:
        """Copy the policy's current weights into the engine, then drop its cached prefixes."""
        worker = self.engine.llm_engine.model_executor.driver_worker
        runner = getattr(worker, "model_runner", None) or worker.worker.model_runner
        runner.model.load_weights((name, p.detach()) for name, p in model.state_dict().items())
        self.engine.reset_prefix_cache()
