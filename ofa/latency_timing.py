"""Timing of layers and subnets on this machine: the device fingerprint, BN folding and a robust timer.

The records (:class:`~ofa.latency_table.DeviceFingerprint`, :class:`~ofa.latency_table.Timing`, ...) live in
:mod:`ofa.latency_table`, readable without torch; this module makes them.

A latency is only meaningful for one device, runtime and setting, so every timing carries a
:class:`DeviceFingerprint` (device and its model, backend and its version, torch version, threads, batch).
Modules are timed as they would be deployed: inference mode, batch norm folded into the convolutions,
``warmup`` calls first, then ``repeats`` samples, each the mean of enough back-to-back calls to last at
least ``min_sample_ms`` (short layers are otherwise below the clock's resolution and the call overhead's
jitter). Many modules are timed in round-robin passes, so a burst of load from other processes touches
one pass of a module rather than all its samples. Kept per module: the fastest sample (the latency that
budgets use, since contention only ever adds time), the median and the interquartile range. On a GPU
every sample ends with ``torch.cuda.synchronize``.
"""

from __future__ import annotations

import contextlib
import io
import math
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ofa.latency_table import DeviceFingerprint, Timing, TimingSettings

__all__ = [
    "BACKENDS",
    "DEVICES",
    "Runner",
    "device_fingerprint",
    "fold_batchnorm",
    "make_runner",
    "summarize",
    "time_many",
    "time_runner",
]

BACKENDS = ("torch", "onnxruntime")
DEVICES = ("cpu", "cuda")
_CONV_BN_PAIRS = (("conv", "bn"), ("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3"))


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name") and ":" in line:
                return " ".join(line.split(":", 1)[1].split())
    return platform.processor() or platform.machine() or "unknown cpu"


def device_fingerprint(
    device: str = "cpu", backend: str = "torch", threads: int = 1, batch: int = 1
) -> DeviceFingerprint:
    """The fingerprint of timing on this machine with these settings.

    Raises:
        ValueError: an unknown device or backend, threads or batch below 1, or a GPU asked for on a machine
            without one.
    """
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; allowed: {', '.join(DEVICES)}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    for name, value in (("threads", threads), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for, but this machine has no usable GPU; use --device cpu")
    if backend == "onnxruntime":
        backend_version = onnxruntime.__version__
        if device == "cuda" and "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            raise ValueError("backend onnxruntime has no CUDA provider here; use --backend torch or --device cpu")
    else:
        backend_version = torch.__version__
    name = torch.cuda.get_device_name() if device == "cuda" else _cpu_name()
    return DeviceFingerprint(device, name, backend, backend_version, torch.__version__, threads, batch)


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` (a static net or one of its parts, in eval mode) with every conv + BN pair fused (in place).

    The fused conv computes what conv then BN computed with the running statistics; the BN becomes an
    identity. Applies to the pairs the static model names (stem, blocks, head).
    """
    module.eval()
    for part in module.modules():
        for conv_name, bn_name in _CONV_BN_PAIRS:
            conv, bn = getattr(part, conv_name, None), getattr(part, bn_name, None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(part, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(part, bn_name, nn.Identity())
    return module


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """Run with ``threads`` intra-op threads, restoring the previous count afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


Runner = Callable[[int], None]  # runner(number): that many back-to-back inferences of one module


def make_runner(
    module: nn.Module, input_shape: tuple[int, ...], fingerprint: DeviceFingerprint, seed: int = 0
) -> Runner:
    """A function running ``number`` back-to-back inferences of ``module`` (BN folded) on a fixed random input
    of ``input_shape`` (batch excluded) with the fingerprint's backend, device, threads and batch.

    The thread count and inference mode are set once per call of the runner, outside the timed inferences
    (entering inference mode costs about 3 us, a tenth of a small layer's time on a CPU)."""
    generator = torch.Generator().manual_seed(seed)
    example = torch.randn((fingerprint.batch, *input_shape), generator=generator)
    model = fold_batchnorm(module)
    if fingerprint.backend == "onnxruntime":
        return _onnxruntime_runner(model, example, fingerprint)
    device = torch.device(fingerprint.device)
    model = model.to(device)
    example = example.to(device)
    synchronize = torch.cuda.synchronize if fingerprint.device == "cuda" else None

    def run(number: int) -> None:
        with _torch_threads(fingerprint.threads), torch.inference_mode():
            for _ in range(number):
                model(example)
        if synchronize is not None:
            synchronize()

    return run


def _onnxruntime_runner(model: nn.Module, example: torch.Tensor, fingerprint: DeviceFingerprint) -> Runner:
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)  # the TorchScript exporter's notice
        warnings.simplefilter("ignore", category=FutureWarning)
        torch.onnx.export(model, (example,), buffer, dynamo=False, input_names=["x"], opset_version=17)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = fingerprint.threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    provider = "CUDAExecutionProvider" if fingerprint.device == "cuda" else "CPUExecutionProvider"
    session = onnxruntime.InferenceSession(buffer.getvalue(), options, providers=[provider])
    feed = {"x": example.numpy()}

    def run(number: int) -> None:
        for _ in range(number):
            session.run(None, feed)

    return run


def _samples(run: Runner, settings: TimingSettings) -> list[float]:
    """``settings.repeats`` samples (ms per inference) of ``run`` after its warm-up."""
    run(settings.warmup)
    start = time.perf_counter()
    run(1)
    single = time.perf_counter() - start
    number = max(1, math.ceil(settings.min_sample_ms / 1e3 / max(single, 1e-9)))
    samples = []
    for _ in range(settings.repeats):
        start = time.perf_counter()
        run(number)
        samples.append((time.perf_counter() - start) / number * 1e3)
    return samples


def summarize(samples: Sequence[float]) -> Timing:
    """Best, median and interquartile range of samples (ms)."""
    quartiles = np.percentile(samples, [25, 75])
    return Timing(float(min(samples)), float(statistics.median(samples)), float(quartiles[1] - quartiles[0]))


def time_runner(run: Runner, settings: TimingSettings) -> Timing:
    """The timing of one runner: ``settings.passes`` x ``settings.repeats`` samples."""
    return summarize([value for _ in range(settings.passes) for value in _samples(run, settings)])


def time_many(
    factories: Sequence[Callable[[], Runner]],
    settings: TimingSettings,
    on_pass: Callable[[int, list[list[float]]], None] | None = None,
    first_pass: int = 0,
    previous: Sequence[Sequence[float]] | None = None,
) -> list[Timing]:
    """Timings of many modules, measured in ``settings.passes`` round-robin passes over all of them.

    A burst of load from other processes (seconds long on a shared machine) then touches one pass of a
    module, not all its samples. ``factories[i]()`` builds the runner of module ``i`` (anew in each pass,
    so only one module is in memory at a time). ``on_pass(done_passes, samples_so_far)`` is called after
    every pass; ``previous`` (samples per module) and ``first_pass`` resume an interrupted measurement.
    """
    samples = [list(values) for values in previous] if previous is not None else [[] for _ in factories]
    for index in range(first_pass, settings.passes):
        for factory, values in zip(factories, samples):
            values.extend(_samples(factory(), settings))
        if on_pass is not None:
            on_pass(index + 1, samples)
    return [summarize(values) for values in samples]
