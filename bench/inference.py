"""Inference time per study for the MRI and echo networks, against the machine's dense matmul.

Networks (random weights; time does not depend on the values):

- ``densenet121_3d``: MONAI DenseNet121, one-channel 96x96x96 volume per study;
- ``r2plus1d_18_echo``: torchvision R(2+1)D-18, one 3-channel clip of 32 frames of
  112x112 per study (the grey echo clip repeated over RGB, as EchoNet-Dynamic feeds it).

Each runs at batch 1 and batch 8 in four variants: fp32, bf16 autocast, channels-last
(``channels_last_3d``) fp32, and channels-last with bf16 autocast; on CUDA, fp32, fp16
AMP and channels-last with AMP. FLOPs per study are counted once with
``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add is 2 FLOPs; convolutions and
linear layers only). The achieved GFLOP/s is set against this run's dense matmul
GFLOP/s (2048x2048, fp32, and bf16 or fp16 to match the variant's compute type): the
ratio says how close a network comes to what the hardware gives a plain matmul.
Everything runs in eval mode under ``torch.inference_mode()``; figures are medians of
``--repeats`` timed runs after one warm-up. Usage:

    python -m bench.inference [--quick] [--repeats N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

# name -> input shape of one study (channels first).
STUDIES: dict[str, tuple[int, ...]] = {
    "densenet121_3d": (1, 96, 96, 96),
    "r2plus1d_18_echo": (3, 32, 112, 112),
}
BATCHES = (1, 8)
MATMUL_SIZE = 2048


@dataclass(frozen=True)
class Variant:
    """One way to run a network: autocast dtype (None for fp32) and memory format."""

    name: str
    autocast: str | None
    channels_last: bool


CPU_VARIANTS = (
    Variant("fp32", None, False),
    Variant("bf16 autocast", "bfloat16", False),
    Variant("channels-last fp32", None, True),
    Variant("channels-last bf16", "bfloat16", True),
)
CUDA_VARIANTS = (
    Variant("fp32", None, False),
    Variant("fp16 AMP", "float16", False),
    Variant("channels-last fp16 AMP", "float16", True),
)


def _synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _median_seconds(run: Callable[[], object], repeats: int, device: str) -> float:
    run()
    _synchronize(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        _synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def matmul_gflops(dtype_name: str, device: str, repeats: int) -> float:
    """Dense ``MATMUL_SIZE``-square matmul GFLOP/s in ``dtype_name`` on ``device``."""
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE, device=device).to(dtype)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE, device=device).to(dtype)
    seconds = _median_seconds(lambda: a @ b, max(repeats, 3), device)
    return 2 * MATMUL_SIZE**3 / seconds / 1e9


def flops_per_study(model: nn.Module, shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass on one study, as ``FlopCounterMode`` counts them."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(torch.zeros(1, *shape))
    return int(counter.get_total_flops())


@contextlib.contextmanager
def _autocast(device: str, dtype_name: str | None) -> Iterator[None]:
    import torch

    if dtype_name is None:
        yield
        return
    with torch.autocast(device_type=device, dtype=getattr(torch, dtype_name)):
        yield


def time_variant(
    model: nn.Module,
    shape: tuple[int, ...],
    batch: int,
    variant: Variant,
    device: str,
    repeats: int,
) -> float:
    """Median seconds of one forward pass of ``batch`` studies in ``variant``."""
    import torch

    memory_format = torch.channels_last_3d if variant.channels_last else torch.contiguous_format
    model = model.to(device).to(memory_format=memory_format)
    inputs = torch.rand(batch, *shape, device=device).to(memory_format=memory_format)

    def run() -> torch.Tensor:
        with torch.inference_mode(), _autocast(device, variant.autocast):
            result: torch.Tensor = model(inputs)
        return result

    return _median_seconds(run, repeats, device)


def main(argv: list[str] | None = None) -> None:
    """Print ms per study, GFLOP/s and the ratio to dense matmul for each network and variant."""
    import torch

    from imaging.models.factory import create_model

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one timed run per figure")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None)
    parser.add_argument("--models", nargs="+", choices=sorted(STUDIES), default=sorted(STUDIES))
    args = parser.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    repeats = 1 if args.quick else args.repeats
    variants = CUDA_VARIANTS if device == "cuda" else CPU_VARIANTS
    low = "float16" if device == "cuda" else "bfloat16"
    peaks = {
        None: matmul_gflops("float32", device, repeats),
        low: matmul_gflops(low, device, repeats),
    }
    print(f"device {device} ({torch.get_num_threads()} threads), torch {torch.__version__}")
    print(f"dense {MATMUL_SIZE}^2 matmul GFLOP/s: fp32 {peaks[None]:.1f}, {low} {peaks[low]:.1f}")
    header = f"{'network':18} {'input/study':16} {'variant':24} {'batch':>5} {'ms/study':>9}"
    print(f"{header} {'GFLOP/s':>8} {'x matmul':>8}")
    for name in args.models:
        shape = STUDIES[name]
        torch.manual_seed(0)
        model = create_model(name).eval()
        flops = flops_per_study(model, shape)
        print(f"{name}: {flops / 1e9:.2f} GFLOP per study, input {'x'.join(map(str, shape))}")
        for variant in variants:
            for batch in BATCHES:
                seconds = time_variant(model, shape, batch, variant, device, repeats)
                achieved = flops * batch / seconds / 1e9
                ratio = achieved / peaks[variant.autocast]
                study = "x".join(map(str, shape))
                print(
                    f"{name:18} {study:16} {variant.name:24} {batch:>5} "
                    f"{1000 * seconds / batch:>9.1f} {achieved:>8.1f} {ratio:>8.2f}"
                )


if __name__ == "__main__":
    main()
