"""The im2col Conv2d of the PyTorch images (images/runner_torch/runner_conv.py) against PyTorch's own
convolution on YOLOv8n-shaped layers: time and peak memory of one forward plus backward pass.

Variants, per layer:
  torch   F.conv2d as PyTorch runs it by default: oneDNN on the CPU, cuDNN (MIOpen on ROCm) on a GPU.
  native  PyTorch's own kernels with oneDNN/cuDNN off. On a GPU this is what `conv_backend: native`
          runs; on the CPU it is the nearest thing (slow_conv2d: im2col + GEMM in C++).
  im2col  runner_conv.conv2d_im2col (F.unfold + torch.matmul): what `conv_backend: im2col` runs.

Peak memory is what one forward + backward pass allocates beyond its inputs, parameters and upstream
gradient. On the CPU tracemalloc does not see torch's allocations, so each measurement runs in a fresh
process, forked from a server that has imported torch but computed nothing, and reports the growth of
its peak resident set (ru_maxrss); on a GPU it is torch.cuda.max_memory_allocated. The first pass
is the one whose memory is measured (oneDNN's primitive set-up counts in `torch`'s); time is the best
of --reps passes after it, as timeit takes it: the least disturbed by whatever else the machine runs.

Usage: python benchmarks/conv_im2col.py [--batch 1 8] [--imgsz 640] [--reps 5] [--device cpu cuda]
       [--threads N] [--layers stem,down1,...]    (the GPU runs by default where torch sees one)
On a busy machine, --threads 1 keeps OpenMP's spinning threads from turning others' load into noise.
"""

import argparse
import collections
import contextlib
import multiprocessing
import os
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "images" / "runner_torch"))
import runner_conv

Layer = collections.namedtuple("Layer", "name cin cout k stride size groups where")

# YOLOv8n (width 0.25, depth 0.33) at 640x640, input size per layer; `where` says which module.
# YOLOv8n has no depthwise conv and no 256->256 3x3: those two rows are YOLO11n's head DWConv (the
# fallback's worst case: its column tensor is 9x the input for one multiply-add per element) and a
# wider 3x3 at 20x20, for scale.
LAYERS = [
    Layer("stem", 3, 16, 3, 2, 640, 1, "model.0 Conv"),
    Layer("down1", 16, 32, 3, 2, 320, 1, "model.1 Conv"),
    Layer("c2f2.cv1", 32, 32, 1, 1, 160, 1, "model.2 C2f cv1"),
    Layer("c2f2.m", 16, 16, 3, 1, 160, 1, "model.2 Bottleneck 3x3"),
    Layer("c2f2.cv2", 48, 32, 1, 1, 160, 1, "model.2 C2f cv2"),
    Layer("down2", 32, 64, 3, 2, 160, 1, "model.3 Conv"),
    Layer("c2f4.m", 32, 32, 3, 1, 80, 1, "model.4 Bottleneck 3x3"),
    Layer("c2f4.cv2", 128, 64, 1, 1, 80, 1, "model.4 C2f cv2"),
    Layer("head.cv3", 64, 80, 3, 1, 80, 1, "Detect cv3 P3"),
    Layer("c2f6.m", 64, 64, 3, 1, 40, 1, "model.6 Bottleneck 3x3"),
    Layer("down4", 128, 256, 3, 2, 40, 1, "model.7 Conv"),
    Layer("c2f8.m", 128, 128, 3, 1, 20, 1, "model.8 Bottleneck 3x3"),
    Layer("sppf.cv2", 512, 256, 1, 1, 20, 1, "model.9 SPPF cv2"),
    Layer("k3-256", 256, 256, 3, 1, 20, 1, "YOLOv8s-wide 3x3 (not in v8n)"),
    Layer("dw3", 64, 64, 3, 1, 80, 64, "YOLO11n DWConv (not in v8n)"),
]
VARIANTS = ("torch", "native", "im2col")


def _native_flags(device):
    if device == "cpu":
        return torch.backends.mkldnn.flags(enabled=False)
    return torch.backends.cudnn.flags(enabled=False)


def _no_flags(device):
    return contextlib.nullcontext()


def _conv_torch(x, w, b, layer):
    return F.conv2d(x, w, b, layer.stride, layer.k // 2, 1, layer.groups)


def _conv_im2col(x, w, b, layer):
    return runner_conv.conv2d_im2col(x, w, b, layer.stride, layer.k // 2, 1, layer.groups)


def out_size(layer, imgsz):
    size = layer.size * imgsz // 640
    return size, (size + 2 * (layer.k // 2) - layer.k) // layer.stride + 1


def column_mib(layer, imgsz, batch):
    """The im2col column tensor that autograd keeps: N * C*k*k * Hout*Wout floats (none for 1x1)."""
    if layer.k == 1:
        return 0.0
    return batch * layer.cin * layer.k**2 * out_size(layer, imgsz)[1] ** 2 * 4 / 2**20


def measure(layer, variant, batch, imgsz, reps, device, threads=0):
    """(best seconds, peak bytes) of forward + backward for one layer, variant and batch."""
    if threads:
        torch.set_num_threads(threads)
    conv = _conv_im2col if variant == "im2col" else _conv_torch
    flags = _native_flags if variant == "native" else _no_flags
    size, out = out_size(layer, imgsz)
    gen = torch.Generator().manual_seed(0)

    def tensors(n, h, o):
        x = torch.randn(n, layer.cin, h, h, generator=gen).to(device)
        x.requires_grad_(layer.name != "stem")  # the stem's input is the image: no gradient wanted
        w = torch.randn(layer.cout, layer.cin // layer.groups, layer.k, layer.k, generator=gen) * 0.1
        w = w.to(device).requires_grad_(True)
        b = torch.zeros(layer.cout, device=device, requires_grad=True)
        return x, w, b, torch.randn(n, layer.cout, o, o, generator=gen).to(device)

    def step(x, w, b, grad_out):
        with flags(device):
            conv(x, w, b, layer).backward(grad_out)
        x.grad = w.grad = b.grad = None

    def sync():
        if device != "cpu":
            torch.cuda.synchronize()

    step(*tensors(1, 16, (16 + 2 * (layer.k // 2) - layer.k) // layer.stride + 1))  # libraries warm
    args = tensors(batch, size, out)
    sync()
    if device == "cpu":
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    else:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    step(*args)
    sync()
    if device == "cpu":
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    else:
        peak = torch.cuda.max_memory_allocated() - base
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step(*args)
        sync()
        times.append(time.perf_counter() - start)
    return min(times), peak


def run_all(layers, batch, imgsz, reps, device, threads=0):
    """{(layer name, variant): (seconds, bytes)}. CPU: one fresh forked process per measurement."""
    jobs = [(layer, variant, batch, imgsz, reps, device, threads) for layer in layers for variant in VARIANTS]
    if device != "cpu":
        return {(j[0].name, j[1]): measure(*j) for j in jobs}
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "runner_conv"])
    with ctx.Pool(1, maxtasksperchild=1) as pool:  # one at a time: measurements do not share cores
        return {(j[0].name, j[1]): pool.apply(measure, j) for j in jobs}


def report(layers, results, batch, imgsz, reps, device, threads=0):
    mib = 2**20
    where = torch.cuda.get_device_name() if device != "cpu" else "%d threads" % (threads or torch.get_num_threads())
    print(
        "\nforward + backward, float32, %s (%s), torch %s, imgsz %d, batch %d, best of %d"
        % (device, where, torch.__version__, imgsz, batch, reps)
    )
    print(
        "%-9s %-22s %9s %9s %9s %7s %7s  %8s %8s %8s %8s %7s"
        % (
            "layer",
            "shape",
            "torch ms",
            "native ms",
            "im2col ms",
            "/torch",
            "/native",
            "torch MB",
            "nativeMB",
            "im2colMB",
            "cols MB",
            "/torch",
        )
    )
    totals = collections.Counter()
    for layer in layers:
        t = {v: results[(layer.name, v)] for v in VARIANTS}
        for v in VARIANTS:
            totals[v + "_s"] += t[v][0]
            totals[v + "_b"] += t[v][1]
        shape = "%d->%d k%d s%d%s @%d" % (
            layer.cin,
            layer.cout,
            layer.k,
            layer.stride,
            " g%d" % layer.groups if layer.groups > 1 else "",
            out_size(layer, imgsz)[0],
        )
        print(
            "%-9s %-22s %9.2f %9.2f %9.2f %7.2f %7.2f  %8.1f %8.1f %8.1f %8.1f %7.2f"
            % (
                layer.name,
                shape,
                t["torch"][0] * 1e3,
                t["native"][0] * 1e3,
                t["im2col"][0] * 1e3,
                _ratio(t["im2col"][0], t["torch"][0]),
                _ratio(t["im2col"][0], t["native"][0]),
                t["torch"][1] / mib,
                t["native"][1] / mib,
                t["im2col"][1] / mib,
                column_mib(layer, imgsz, batch),
                _ratio(t["im2col"][1], t["torch"][1]),
            )
        )
    print(
        "%-32s %9.2f %9.2f %9.2f %7.2f %7.2f  %8.1f %8.1f %8.1f %8s %7.2f"
        % (
            "total (memory: sum of peaks)",
            totals["torch_s"] * 1e3,
            totals["native_s"] * 1e3,
            totals["im2col_s"] * 1e3,
            _ratio(totals["im2col_s"], totals["torch_s"]),
            _ratio(totals["im2col_s"], totals["native_s"]),
            totals["torch_b"] / mib,
            totals["native_b"] / mib,
            totals["im2col_b"] / mib,
            "",
            _ratio(totals["im2col_b"], totals["torch_b"]),
        )
    )


def _ratio(a, b):
    return a / b if b > 0 else float("nan")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument(
        "--device",
        nargs="+",
        choices=["cpu", "cuda"],
        default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []),
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads on the CPU (default: torch's own choice, one per core)"
    )
    parser.add_argument(
        "--layers", default=",".join(layer.name for layer in LAYERS), help="comma-separated layer names (default: all)"
    )
    args = parser.parse_args(argv)
    names = args.layers.split(",")
    layers = [layer for layer in LAYERS if layer.name in names]
    unknown = set(names) - {layer.name for layer in LAYERS}
    if unknown:
        parser.error("unknown layers: %s" % ", ".join(sorted(unknown)))
    for device in args.device:
        for batch in args.batch:
            results = run_all(layers, batch, args.imgsz, args.reps, device, args.threads)
            report(layers, results, batch, args.imgsz, args.reps, device, args.threads)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")  # torch's import notices, in the forked children too
    sys.exit(main())
