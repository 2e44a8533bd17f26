"""torch.distributed for pre-/mid-training: launch detection, process group, DDP / FSDP2 wrapping.

    torchrun --nproc-per-node 8 -m shapedce pretrain --preset paper --out runs/4b           # one node
    python -m torch.distributed.run --standalone --nproc-per-node 2 \
        -m shapedce pretrain --preset smoke --out /tmp/smoke2                            # CPU, gloo

A run is distributed when torchrun's variables are set (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT) and WORLD_SIZE > 1; with none of them, or WORLD_SIZE=1, the trainer is
the plain single-process one. Backend: nccl on CUDA (one GPU per LOCAL_RANK), gloo on CPU.

`train.parallel` picks the wrapper: "ddp" (DistributedDataParallel, full replicas) or "fsdp"
(FSDP2 `fully_shard` on every decoder layer, then the root: parameters, gradients and optimizer
state sharded). "auto" is fsdp on CUDA, where memory is what runs out, and ddp on CPU, where
one all-reduce per bucket is the cheapest collective for the small CPU models.

bf16 (`train.precision` / RL `precision`) under "fsdp" is FSDP2's `MixedPrecisionPolicy(param_dtype=
bfloat16, reduce_dtype=float32)`, not autocast: each layer's fp32 shards are cast and all-gathered in
bf16 for its forward (and again for its backward), then freed; gradients are reduce-scattered in
float32 into the fp32 sharded gradients, so master weights and AdamW state stay fp32 and sharded.
Autocast would instead keep a bf16 copy of every weight it casts until the step's backward: under
FSDP2 a whole unsharded bf16 model per device. One process and "ddp" keep bf16 autocast
(`autocast_dtype`). docs/guides/scaling.md has the memory terms of both.

Global batch semantics equal one process: each optimizer step reads the same
`train.global_batch_tokens` tokens as one process would, split as whole micro-batches over the
ranks (rank r takes the r-th contiguous block), so every rank does
global_batch_tokens / (micro_batch * seq_len * world) accumulation steps. DDP and FSDP average
gradients over ranks, so each rank normalises its summed loss by global_tokens / world: the
averaged gradient is then exactly the one-process gradient (sum over all tokens / global tokens).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import UserError

RENDEZVOUS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
"""The variables torchrun sets for every worker; all are needed for a distributed run."""
TRIGGERS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
"""Any of these set means the user meant a distributed launch (MASTER_* alone may be cluster-wide)."""
PARALLEL = ("auto", "ddp", "fsdp")


@dataclass(frozen=True, slots=True)
class Dist:
    """Where this process sits in the job; the default is a single process."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def on(self) -> bool:
        """True when there is more than one process (a process group exists)."""
        return self.world > 1

    @property
    def main(self) -> bool:
        """True on the process that writes metrics, progress bars and final/."""
        return self.rank == 0


def _env_int(environ: Mapping[str, str], key: str, low: int, high: int | None = None) -> int:
    raw = environ[key]
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value > high):
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise UserError(f"distributed launch: {key} must be an integer {allowed}; got {raw!r}")
    return value


def detect(environ: Mapping[str, str] = os.environ) -> Dist:
    """The job layout from torchrun's environment, with a one-line error when it is incomplete."""
    present = [k for k in TRIGGERS if k in environ]
    if not present:
        return Dist()
    missing = [k for k in RENDEZVOUS if not environ.get(k)]
    if missing:
        raise UserError(
            f"distributed launch: {present[0]} is set but {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} missing; launch with torchrun, which sets "
            f"{', '.join(RENDEZVOUS)}"
        )
    world = _env_int(environ, "WORLD_SIZE", 1)
    rank = _env_int(environ, "RANK", 0, world - 1)
    _env_int(environ, "MASTER_PORT", 1, 65535)
    return Dist(rank=rank, world=world, local_rank=_env_int(environ, "LOCAL_RANK", 0))


def check_world(grad_accum: int, world: int, global_batch_tokens: int, micro_batch: int, seq_len: int) -> int:
    """Micro-batches per rank per step; a one-line error when the world does not divide the batch."""
    if grad_accum % world:
        raise UserError(
            f"world size {world} must divide the micro-batches per step, train.global_batch_tokens / "
            f"(train.micro_batch * data.seq_len) = {global_batch_tokens} / ({micro_batch} * {seq_len}) "
            f"= {grad_accum}; "
            f"make it a multiple of {world}"
        )
    return grad_accum // world


def init(d: Dist, device: torch.device) -> None:
    """Join the process group: nccl on CUDA (this rank's GPU), gloo on CPU. No-op for one process."""
    if not d.on or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(d.local_rank)
        dist.init_process_group("nccl", device_id=torch.device("cuda", d.local_rank))
    else:
        dist.init_process_group("gloo")


def teardown(d: Dist) -> None:
    if d.on and dist.is_initialized():
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.on:
        dist.barrier()


def device_for(d: Dist, device: torch.device) -> torch.device:
    """This rank's device: cuda:LOCAL_RANK when training on CUDA."""
    return torch.device("cuda", d.local_rank) if device.type == "cuda" and d.on else device


def resolve_parallel(parallel: str, device: torch.device) -> str:
    """ "ddp" or "fsdp" for `train.parallel` ("auto": fsdp on CUDA, ddp on CPU)."""
    if parallel not in PARALLEL:
        raise UserError(f"train.parallel must be one of {', '.join(PARALLEL)}; got {parallel!r}")
    if parallel == "auto":
        return "fsdp" if device.type == "cuda" else "ddp"
    return parallel


def mixed_precision(d: Dist, parallel: str, amp: torch.dtype | None) -> bool:
    """True when bf16 is FSDP2's MixedPrecisionPolicy: a bf16 run sharded over several processes."""
    return d.on and parallel == "fsdp" and amp is not None


def autocast_dtype(d: Dist, parallel: str, amp: torch.dtype | None) -> torch.dtype | None:
    """The dtype to autocast the forward to: `amp` for one process or DDP, None (no autocast) in
    float32 or under FSDP2's MixedPrecisionPolicy, which casts the parameters itself."""
    return None if mixed_precision(d, parallel, amp) else amp


def wrap(
    model: torch.nn.Module, d: Dist, parallel: str, device: torch.device, amp: torch.dtype | None = None
) -> torch.nn.Module:
    """The training module: the model itself (one process), DDP around it, or the model FSDP2-sharded
    in place (per decoder layer, then the root holding embeddings, final norm and the tied head);
    with `amp` (bf16) under FSDP2, every `fully_shard` gets the bf16 MixedPrecisionPolicy."""
    if not d.on:
        return model
    if parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[d.local_rank] if device.type == "cuda" else None)
    return fsdp_shard(model, amp)


def fsdp_shard(model: torch.nn.Module, amp: torch.dtype | None = None) -> torch.nn.Module:
    """FSDP2 `fully_shard` on every decoder layer, then the root, in place over the default process
    group; with `amp` (bf16) the MixedPrecisionPolicy(param_dtype=amp, reduce_dtype=float32)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = (
        MixedPrecisionPolicy(param_dtype=amp, reduce_dtype=torch.float32)
        if amp is not None
        else MixedPrecisionPolicy()
    )
    for layer in model.model.layers:
        fully_shard(layer, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The Hugging Face model inside a DDP wrapper (FSDP2 shards in place, nothing to unwrap)."""
    return module.module if isinstance(module, torch.nn.parallel.DistributedDataParallel) else module


def is_sharded(module: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


@contextlib.contextmanager
def grad_sync(module: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """Reduce gradients across ranks only on the last micro-batch of a step."""
    if isinstance(module, torch.nn.parallel.DistributedDataParallel) and not enabled:
        with module.no_sync():
            yield
        return
    if is_sharded(module):
        module.set_requires_gradient_sync(enabled)
    yield


def clip_grad_norm(module: torch.nn.Module, max_norm: float) -> float:
    """Global gradient norm before clipping (over all shards under FSDP), clipped to max_norm (0: off)."""
    norm = torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm or math.inf)
    if hasattr(norm, "full_tensor"):  # a DTensor under FSDP2
        norm = norm.full_tensor()
    return float(norm)


def _comm_device() -> torch.device:
    return (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )


def all_sum(d: Dist, values: list[float]) -> list[float]:
    """Element-wise sum over ranks, in float64 (identity for one process)."""
    if not d.on:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return t.tolist()


def any_rank(d: Dist, flag: bool) -> bool:
    """True on every rank when it is true on any (e.g. one rank got Ctrl-C)."""
    if not d.on:
        return flag
    t = torch.tensor([int(flag)], device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_objects(d: Dist, obj: object) -> list[object]:
    """Every rank's `obj`, in rank order (a one-element list for one process)."""
    if not d.on:
        return [obj]
    out: list[object] = [None] * d.world
    dist.all_gather_object(out, obj)
    return out
