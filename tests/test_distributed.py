"""Data-parallel training on CPU with gloo: every rank ends with the same weights and trained the same archs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ofa.checkpoint import load_checkpoint
from ofa.distributed import DistributedContext, init_distributed

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "train" / "digits.yaml"
STEPS = 3
QUICK = (
    "epochs=2",
    f"max_steps_per_epoch={STEPS}",
    "data.batch_size=16",  # 8 images per rank
    "data.eval_batch_size=270",
    "sampler.flops_samples=400",
    "sampler.flops_bin_mmacs=0.6",
    "calibration.num_batches=1",
    "calibration.batch_size=32",
)

# The collective helpers, checked on every rank before the runs below.
CHECKS = """
def collective_checks(context):
    model = nn.Linear(3, 2)
    model.register_parameter("unused", nn.Parameter(torch.zeros(4)))
    model.weight.grad = torch.full((2, 3), float(context.rank + 1))
    model.bias.grad = torch.ones(2) if context.rank == 1 else None
    context.all_reduce_gradients(model)  # mean; missing on one rank = zero; missing everywhere stays None
    return {
        "weight": model.weight.grad.tolist(),
        "bias": model.bias.grad.tolist(),
        "unused_is_none": model.unused.grad is None,
        "mean": context.all_reduce_mean(torch.tensor([float(context.rank), 10.0 * context.rank])).tolist(),
    }
"""

# One rank: BestUp-3 sandwich steps with the loss scorer on its own random batches.
STEPS_SCRIPT = (
    """
import json, random, sys
from pathlib import Path

import torch
from torch import nn

from ofa.distributed import init_distributed
from ofa.sampling import AttentiveSampler, FlopsTargetSampler, build_flops_table
from ofa.space import load_space
from ofa.supernet import Supernet
from ofa.train import StepSettings, build_optimizer, loss_scorer, sandwich_step
from ofa.train_config import OptimSection
"""
    + CHECKS
    + """
torch.set_num_threads(1)
out = Path(sys.argv[1])
context = init_distributed("cpu")  # joins the group from RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT
checks = collective_checks(context)
space = load_space("tiny")
torch.manual_seed(100 + context.rank)  # different initial weights and dropout masks on each rank
supernet = Supernet(space, 10, dropout=0.1)
context.broadcast_parameters(supernet)
initial = {name: tensor.clone() for name, tensor in supernet.state_dict().items()}
table = build_flops_table(space, 10, num_samples=300, bin_mmacs=0.75)
sampler = AttentiveSampler(FlopsTargetSampler(space, table, 10), 3, "best")
rng = random.Random(0)
optimizer = build_optimizer(supernet, OptimSection())
settings = StepSettings(label_smoothing=0.1, dropout=0.1, grad_clip_value=1.0, bf16=False)
data = torch.Generator().manual_seed(context.rank)  # each rank its own half of the batch
archs, losses = [], []
for step in range(4):
    images = torch.randn(8, 3, 32, 32, generator=data)
    labels = torch.randint(0, 10, (8,), generator=data)
    scorer = loss_scorer(supernet, images, labels, 0.1, context)
    sampled = [sampler.sample(rng, scorer) for _ in range(2)]
    trained = [space.max_arch(), *sampled, space.min_arch()]
    losses.append(sandwich_step(supernet, images, labels, trained, optimizer, settings, context))
    archs.append([arch.to_dict() for arch in sampled])
torch.save(
    {
        "rank": context.rank,
        "world_size": context.world_size,
        "checks": json.dumps(checks),
        "initial": initial,
        "model": supernet.state_dict(),
        "archs": json.dumps(archs),
        "losses": json.dumps(losses),
    },
    out / f"rank{context.rank}.pt",
)
torch.distributed.destroy_process_group()
"""
)

# One rank of a whole training run (``ofa.trainer.train``), dumping what it ended with.
TRAIN_SCRIPT = """
import json, sys
from pathlib import Path

import torch

from ofa.distributed import init_distributed
from ofa.train_config import load_train_config
from ofa.trainer import train

torch.set_num_threads(1)
out, config_path, overrides = Path(sys.argv[1]), sys.argv[2], tuple(sys.argv[3:])
result = train(load_train_config(config_path, overrides), progress=False)
rank = torch.distributed.get_rank()
archs = [[arch.to_dict() for arch in step] for step in result.trained_archs]
torch.save({"rank": rank, "model": result.supernet.state_dict(), "archs": json.dumps(archs)}, out / f"rank{rank}.pt")
torch.distributed.destroy_process_group()
"""


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_two_ranks(tmp_path: Path, script_text: str, *arguments: str) -> list[dict]:
    """Start two ranks as separate processes (as torchrun would) and return what each dumped."""
    script = tmp_path / "rank.py"
    script.write_text(script_text)
    environment = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "WORLD_SIZE": "2",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, str(script), str(tmp_path), *arguments]
    processes = [
        subprocess.Popen(
            command,
            env={**environment, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=240))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for rank, (process, (_, stderr)) in enumerate(zip(processes, outputs)):
        assert process.returncode == 0, f"rank {rank} failed:\n{stderr[-3000:]}"
    return [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2)]


@pytest.mark.slow  # two processes that each import torch and the trainer: ~15 s
def test_two_gloo_ranks_step_in_lockstep(tmp_path: Path) -> None:
    first, second = run_two_ranks(tmp_path, STEPS_SCRIPT)

    assert (first["rank"], second["rank"], first["world_size"]) == (0, 1, 2)
    for dumped in (first, second):
        checks = json.loads(dumped["checks"])
        assert checks["weight"] == [[1.5] * 3] * 2
        assert checks["bias"] == [0.5, 0.5]
        assert checks["unused_is_none"]
        assert checks["mean"] == [0.5, 5.0]
    for name, tensor in first["initial"].items():  # rank 0's initial weights reached rank 1
        assert torch.equal(tensor, second["initial"][name]), name
    # the same subnets: the attentive losses were averaged over ranks before every choice
    archs = json.loads(first["archs"])
    assert archs == json.loads(second["archs"])
    assert json.loads(first["losses"]) == json.loads(second["losses"])
    # the same weights, bit for bit, after training on different data on each rank (BN running statistics
    # follow each rank's own batches; evaluation recalibrates them, see the whole-run test)
    parameters = [name for name in first["model"] if not name.endswith(("running_mean", "running_var", "tracked"))]
    changed = 0
    for name in parameters:
        assert torch.equal(first["model"][name], second["model"][name]), name
        changed += not torch.equal(first["model"][name], first["initial"][name])
    assert changed > len(parameters) // 2


@pytest.mark.slow  # two processes that each import the whole trainer and build the data: ~10-15 s
def test_two_gloo_ranks_train_identical_weights_and_archs(tmp_path: Path) -> None:
    out_dir = tmp_path / "runs"
    first, second = run_two_ranks(tmp_path, TRAIN_SCRIPT, str(CONFIG), f"out_dir={out_dir}", *QUICK)

    assert (first["rank"], second["rank"]) == (0, 1)
    archs = json.loads(first["archs"])
    assert archs == json.loads(second["archs"]) and len(archs) == 2 * STEPS
    assert first["model"].keys() == second["model"].keys()
    for name, tensor in first["model"].items():
        assert torch.equal(tensor, second["model"][name]), name
    run_dir = out_dir / "digits"
    state = load_checkpoint(run_dir / "checkpoints" / "latest.pt")  # written by rank 0 alone
    assert state["epoch"] == 2
    for name, tensor in first["model"].items():
        assert torch.equal(tensor, state["model"][name]), name
    logged = [json.loads(line)["archs"] for line in (run_dir / "archs.jsonl").read_text().splitlines()]
    assert logged == archs
    assert len((run_dir / "metrics.csv").read_text().splitlines()) == 3  # header + one row per epoch


@pytest.mark.slow
def test_torchrun_with_the_ofa_command(tmp_path: Path) -> None:
    overrides = [item for override in (f"out_dir={tmp_path}", *QUICK) for item in ("--set", override)]
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",  # a free rendezvous port on localhost
            "--nproc_per_node",
            "2",
            "-m",
            "ofa.cli",
            "train",
            str(CONFIG),
            *overrides,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.count("epoch   1 ") == 1  # rank 0 alone logs epochs
    state = load_checkpoint(tmp_path / "digits" / "checkpoints" / "latest.pt")
    assert state["epoch"] == 2
    assert len((tmp_path / "digits" / "archs.jsonl").read_text().splitlines()) == 2 * STEPS


# ---------------------------------------------------------------------------------------------------
# one process: the helpers do nothing


def test_single_process_context_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    context = init_distributed("cpu")
    assert (context.rank, context.world_size, context.device) == (0, 1, torch.device("cpu"))
    assert context.is_main and not context.enabled
    model = nn.Linear(2, 2)
    model.weight.grad = torch.ones(2, 2)
    context.all_reduce_gradients(model)
    assert torch.equal(model.weight.grad, torch.ones(2, 2)) and model.bias.grad is None
    values = torch.tensor([1.0, 2.0])
    assert torch.equal(context.all_reduce_mean(values), torch.tensor([1.0, 2.0]))
    before = model.weight.detach().clone()
    context.broadcast_parameters(model)
    assert torch.equal(model.weight, before)


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device: cuda was asked for but no GPU is available"):
        init_distributed("cuda")
    assert DistributedContext(1, 2, torch.device("cpu")).is_main is False
