"""PAT encoder forward pass for one user-week (batch 1) on ONE core: PAT-S and PAT-L.

    .venv/bin/python bench/pat_forward.py [--runs 30] [--json]

Random weights of the published shapes, built here (no TensorFlow, no weight file): the cost of the forward
pass does not depend on the values. Reports median and p90 wall time per week; the target is PAT-S ≤ 30 ms.
"""

from __future__ import annotations

import os

# one core: BLAS reads these when numpy is first imported
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from prediction_worker.pat.encoder import SIZES, PatEncoder, tensor_shapes  # noqa: E402

TARGET_MS = {"PAT-S": 30.0}


def random_encoder(model_id: str, seed: int = 0) -> PatEncoder:
    rng = np.random.default_rng(seed)
    shapes = tensor_shapes(*SIZES[model_id])
    tensors = {name: (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)
               for name, shape in shapes.items()}
    return PatEncoder(tensors, weights_sha256="none (random benchmark weights)", model_id=model_id)


def time_forward(encoder: PatEncoder, runs: int, warmup: int = 2) -> list[float]:
    week = np.random.default_rng(1).standard_normal((1, 10_080)).astype(np.float32)
    for _ in range(warmup):
        encoder.embed(week)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        encoder.embed(week)
        times.append((time.perf_counter() - start) * 1000)
    return times


def machine() -> dict[str, object]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info: dict[str, object] = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
                               "numpy": np.__version__}
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["blas"] = f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # noqa: S110  (the shape of show_config's dict is not a stable API: no BLAS line then)
        pass
    try:
        from threadpoolctl import (
            threadpool_info,  # optional: which kernel and how many threads BLAS runs
        )

        info["blas_runtime"] = [{k: p.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
                                for p in threadpool_info()]
    except ImportError:
        pass
    info["OPENBLAS_CORETYPE"] = os.environ.get("OPENBLAS_CORETYPE", "(unset)")
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30, help="timed runs for PAT-S (PAT-L: a third of them)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    results = {}
    for model_id, runs in (("PAT-S", args.runs), ("PAT-L", max(5, args.runs // 3))):
        times = time_forward(random_encoder(model_id), runs)
        results[model_id] = {"runs": runs, "median_ms": round(float(np.median(times)), 1),
                             "p90_ms": round(float(np.percentile(times, 90)), 1), "min_ms": round(min(times), 1)}
    if args.json:
        print(json.dumps({"machine": machine(), "results": results}, indent=2))
        return
    for key, value in machine().items():
        print(f"{key}: {value}")
    print(f"{'model':<7} {'runs':>5} {'median ms':>10} {'p90 ms':>8} {'min ms':>8}  target")
    for model_id, r in results.items():
        target = TARGET_MS.get(model_id)
        verdict = "" if target is None else f"≤ {target:g} ms: {'met' if r['p90_ms'] <= target else 'MISSED'}"
        print(f"{model_id:<7} {r['runs']:>5} {r['median_ms']:>10} {r['p90_ms']:>8} {r['min_ms']:>8}  {verdict}")


if __name__ == "__main__":
    main()
