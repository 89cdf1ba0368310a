#!/usr/bin/python3
"""bench_torch.py - PyTorch CPU (or GPU) baseline for pollen's benchmarks (BENCHMARKS.md).

Trains (forward, cross-entropy, backward, SGD step: all inside the timed step) or runs
inference on random data with a torchvision MobileNet, and prints one JSON line:
images/s as the median over the timed steps, and peak resident memory (VmHWM).

  /usr/bin/python3 tools/bench_torch.py --model mnv3-small --size 224 --batch 32 \
      --threads 2 --mode train --channels-last --steps 6 --warmup 2
  GPU (tools/gpu_check.sh): --device cuda --amp --compile --channels-last --batch 256
  (--amp: bfloat16 autocast; --compile: torch.compile; timing syncs the GPU each step and
  peak memory is then the GPU's, torch.cuda.max_memory_allocated).
"""
import argparse
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F
import torchvision

MODELS = {"mnv3-small": torchvision.models.mobilenet_v3_small,
          "mnv3-large": torchvision.models.mobilenet_v3_large,
          "mnv2": torchvision.models.mobilenet_v2}


def peak_rss_mib():
    """VmHWM: the process's peak resident set, exactly what a node's memory limit sees."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="mnv3-small")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--classes", type=int, default=5)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mode", choices=["train", "infer"], default="train")
    ap.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    ap.add_argument("--steps", type=int, default=6, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--amp", action="store_true", help="bfloat16 autocast (mixed precision)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no CUDA device")
    if args.steps < 1 or args.warmup < 0 or args.batch < 2 or args.threads < 1:
        ap.error("need --steps >= 1, --warmup >= 0, --batch >= 2, --threads >= 1")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = MODELS[args.model](width_mult=args.width, num_classes=args.classes)
    dev = torch.device(args.device)
    model = model.to(dev)
    x = torch.randn(args.batch, 3, args.size, args.size, device=dev)
    y = torch.randint(0, args.classes, (args.batch,), device=dev)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    fwd = torch.compile(model) if args.compile else model
    amp_dtype = torch.bfloat16

    def sync():
        if args.device == "cuda":
            torch.cuda.synchronize()

    def train_step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(args.device, dtype=amp_dtype, enabled=args.amp):
            loss = F.cross_entropy(fwd(x), y)
        loss.backward()
        opt.step()
        sync()

    def infer_step():
        with torch.inference_mode(), torch.autocast(args.device, dtype=amp_dtype, enabled=args.amp):
            fwd(x)
        sync()

    model.train(args.mode == "train")
    step = train_step if args.mode == "train" else infer_step
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    preload = os.environ.get("LD_PRELOAD", "")
    print(json.dumps({
        "engine": "pytorch", "torch_version": torch.__version__, "model": args.model,
        "width": args.width, "size": args.size, "batch": args.batch, "threads": args.threads,
        "mode": args.mode, "channels_last": args.channels_last,
        "allocator": "jemalloc" if "jemalloc" in preload else "glibc",
        "mkldnn": torch.backends.mkldnn.is_available(),
        "steps": args.steps, "warmup": args.warmup, "device": args.device,
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
        "amp": args.amp, "compile": args.compile,
        "gpu_peak_mib": (round(torch.cuda.max_memory_allocated() / 2**20, 1)
                         if args.device == "cuda" else None),
        "images_per_s": args.batch / med, "step_s_median": med, "step_s_min": min(times),
        "peak_rss_mib": round(peak_rss_mib(), 1)}))


if __name__ == "__main__":
    main()
