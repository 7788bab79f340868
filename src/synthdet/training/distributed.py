"""Several processes, one model: what torchrun and DistributedDataParallel need from synthdet.

``torchrun --nproc_per_node N -m synthdet train CONFIG`` starts N copies of synthdet and
gives each its RANK, WORLD_SIZE, LOCAL_RANK and a rendezvous address. Each process trains
on its own part of every epoch; DDP averages the gradients; process 0 (the main one)
measures the normalization statistics and lists the data once for all, and alone writes
logs, checkpoints and reports. Without torchrun everything here is a no-op.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any, Iterator, TypeVar

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """Where this process stands: its rank among ``size`` processes, and on its own machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """This process's place in the process group, or a world of one without it."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)),
                 int(os.environ.get("LOCAL_WORLD_SIZE", 1)))


class RankFailure(RuntimeError):
    """A collective failed: another rank died, or stalled past the collective timeout."""


#: Where this process is in its work, for the message when a collective fails (see :func:`at`).
_place = "joining the process group"


def at(place: str) -> None:
    """Note where this process is (e.g. "epoch 2, step 14"), so a failed collective can say so."""
    global _place
    _place = place


def collective_timeout() -> float:
    """Seconds every collective waits for the other ranks: ``SYNTHDET_COLLECTIVE_TIMEOUT`` (default 300)."""
    return float(os.environ.get("SYNTHDET_COLLECTIVE_TIMEOUT", 300))


@contextlib.contextmanager
def process_group(cuda: bool) -> Iterator[None]:
    """Join the process group torchrun prepared: NCCL between GPUs, gloo between CPU processes.

    Does nothing for a single process, or when the caller already joined one. Every
    collective gives up after :func:`collective_timeout` (torch's default is 30 minutes), and
    its error becomes a :class:`RankFailure` naming this rank and where it was.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        yield
        return
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    timeout = collective_timeout()
    dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=timeout))
    here = world()
    try:
        yield
    except RuntimeError as exc:
        if not _collective_failure(exc):
            raise
        detail = str(exc).strip().splitlines()[-1][:300]
        raise RankFailure(
            f"rank {here.rank} of {here.size} stopped at {_place}: another rank died or gave no answer within "
            f"{timeout:g} s (SYNTHDET_COLLECTIVE_TIMEOUT) [{type(exc).__name__}: {detail}]") from None
    finally:
        dist.destroy_process_group()


#: What gloo and NCCL errors say when a peer stalled or died; in a backward pass they reach us as
#: plain RuntimeErrors (autograd re-raises them), not as torch.distributed.DistError.
PEER_FAILURE_SIGNS = ("Timed out waiting", "Connection closed by peer", "Connection reset by peer", "gloo", "NCCL")


def _collective_failure(exc: RuntimeError) -> bool:
    return isinstance(exc, dist.DistError) or any(sign in str(exc) for sign in PEER_FAILURE_SIGNS)


def process_device(device: torch.device) -> torch.device:
    """This process's own GPU (``cuda:LOCAL_RANK``) under torchrun; any other device unchanged."""
    here = world()
    return torch.device("cuda", here.local_rank) if device.type == "cuda" and here.size > 1 else device


def workers_per_process(workers: int) -> int:
    """``data.workers = -1`` (one per core) shares the machine's cores among its processes."""
    return max(1, (os.cpu_count() or 1) // world().local_size) if workers < 0 else workers


def broadcast(value: T) -> T:
    """The main process's ``value`` in every process (any picklable object)."""
    if world().size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: T) -> list[T]:
    """Every process's ``value``, in rank order, in every process."""
    if world().size == 1:
        return [value]
    values: list[Any] = [None] * world().size
    dist.all_gather_object(values, value)
    return values


def sum_across(*values: float) -> list[float]:
    """Sums over all processes (e.g. images seen, loss sums), in float64."""
    if world().size == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor)
    return tensor.tolist()


def everyone(flag: bool) -> bool:
    """Whether ``flag`` holds in every process (all must agree before a step that all take)."""
    if world().size == 1:
        return flag
    tensor = torch.tensor([int(flag)], device=_collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return bool(tensor.item())


def sync_buffers(module: torch.nn.Module) -> None:
    """Copy the main process's buffers (batch-norm statistics) to every process; DDP keeps parameters equal."""
    if world().size > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def mean_across(stats: dict[str, float], weight: float) -> dict[str, float]:
    """Per-process statistics averaged with weights (images seen): exact for ratios such as accuracy."""
    if world().size == 1:
        return stats
    *sums, total = sum_across(*(v * weight for v in stats.values()), weight)
    return {k: s / max(total, 1e-12) for k, s in zip(stats, sums)}


def _collective_device() -> torch.device:
    """NCCL reduces tensors on the process's GPU, gloo on the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


class DistributedWeightedSampler(Sampler[int]):
    """Weighted sampling with replacement split between processes, so class balance survives DDP.

    Every process draws the same ``num_samples`` indices (same seed, changed by
    :meth:`set_epoch`) and keeps those at positions rank, rank + size, ...: distinct parts of
    one balanced draw. torch's ``WeightedRandomSampler`` knows no ranks, and its
    ``DistributedSampler`` splits a permutation, which cannot repeat the rarer class.
    """

    def __init__(self, weights: torch.Tensor, num_samples: int, rank: int, size: int, seed: int = 0):
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        self.rank, self.size, self.seed, self.epoch = rank, size, seed, 0
        self.per_process = -(-num_samples // size)  # ceil: every process gets as many

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        draw = torch.multinomial(self.weights, self.per_process * self.size, replacement=True, generator=generator)
        return iter(draw[self.rank::self.size].tolist())

    def __len__(self) -> int:
        return self.per_process


def launch(nproc: int, args: list[str]) -> int:
    """Run ``synthdet ARGS`` in ``nproc`` processes on this machine through torchrun; the exit status.

    torchrun prints which process failed and why; it stops the others.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(["--standalone", f"--nproc_per_node={nproc}", "-m", "synthdet", *args])
    except ChildFailedError as exc:
        return exc.get_first_failure()[1].exitcode or 1
    return 0
