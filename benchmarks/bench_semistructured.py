"""Inference of a 2:4-sparse checkpoint: PyTorch's semi-structured sparse kernels (GPU) and the CPU fallbacks vs
dense, on the same weights.

    .venv/bin/python benchmarks/bench_semistructured.py [--features 4096] [--batch 256] [--layers 3] [--json]

The model is a stack of ``--layers`` Linear layers of ``features x features`` pruned to 2:4 with the N:M
structure of :mod:`advbench.compression.structures` (every 4 consecutive input weights keep 2), as
``advbench prune --structure nm`` leaves them.  Timed, as the median of ``--repeats`` forward passes after a
warm-up, on the same input:

* ``dense``: the pruned weights as ordinary dense tensors (zeros multiplied like any other weight);
* ``csr`` (CPU): the weights as ``torch.sparse_csr`` tensors, PyTorch's general sparse fallback on the CPU;
* ``semi-structured`` (CUDA only): the weights as ``torch.sparse.to_sparse_semi_structured`` tensors, the 2:4
  kernels of sparse tensor cores (half precision, as those kernels require).

Prints ``RATIO dense/<variant>`` (above 1: the variant is faster) and checks that every variant gives the dense
outputs (to a tolerance for half precision).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import torch
from torch import nn

from advbench.compression.structures import create_structure


def pruned_stack(features: int, layers: int, device: str, dtype: torch.dtype) -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(*[nn.Linear(features, features, bias=False) for _ in range(layers)])
    two_four = create_structure("nm", n=2, m=4)
    with torch.no_grad():
        for layer in net:
            layer.weight.copy_(two_four.project(layer.weight, 0.0))
            assert two_four.violations(layer.weight) == []
    return net.to(device=device, dtype=dtype).eval()


def timed(fn, x: torch.Tensor, repeats: int) -> float:
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    with torch.no_grad():
        fn(x)
        sync()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(x)
            sync()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    dtype = torch.float16 if cuda else torch.float32
    net = pruned_stack(args.features, args.layers, args.device, dtype)
    x = torch.rand(args.batch, args.features, device=args.device, dtype=dtype)
    with torch.no_grad():
        reference = net(x)
    result = {"device": torch.cuda.get_device_name() if cuda else "cpu", "threads": torch.get_num_threads(),
              "features": args.features, "batch": args.batch, "layers": args.layers, "dtype": str(dtype),
              "seconds": {"dense": timed(net, x, args.repeats)}}
    variants = {}
    if cuda:
        from torch.sparse import to_sparse_semi_structured

        weights = [to_sparse_semi_structured(layer.weight) for layer in net]
        variants["semi-structured"] = lambda inp: _chain(inp, weights, lambda a, w: torch.mm(w, a.t()).t())
    else:
        with warnings.catch_warnings():  # "sparse CSR support is in beta": known, and measured here
            warnings.simplefilter("ignore", UserWarning)
            weights = [layer.weight.to_sparse_csr() for layer in net]
        variants["csr"] = lambda inp: _chain(inp, weights, lambda a, w: torch.sparse.mm(w, a.t()).t())
    for name, fn in variants.items():
        with torch.no_grad():
            out = fn(x)
        tol = 5e-2 if dtype == torch.float16 else 1e-3
        if not torch.allclose(out.float(), reference.float(), rtol=tol, atol=tol):
            raise SystemExit(f"{name} outputs differ from dense: max error {float((out - reference).abs().max())}")
        result["seconds"][name] = timed(fn, x, args.repeats)
    result["ratio"] = {name: result["seconds"]["dense"] / result["seconds"][name] for name in variants}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.layers} x Linear({args.features}, {args.features}) at 2:4, batch {args.batch}, {result['device']} "
          f"({result['threads']} threads), {dtype}: dense {1e3 * result['seconds']['dense']:.1f} ms")
    for name, ratio in result["ratio"].items():
        print(f"RATIO dense/{name} = {ratio:.3f}  ({1e3 * result['seconds'][name]:.1f} ms; above 1: {name} is faster)")


def _chain(x: torch.Tensor, weights, matmul) -> torch.Tensor:
    for weight in weights:
        x = matmul(x, weight)
    return x


if __name__ == "__main__":
    main()
