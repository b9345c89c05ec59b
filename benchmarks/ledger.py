"""Ledger benchmark: append rate into the RocksDB Merkle store, inclusion proofs at 10 M leaves.

Targets (issue 4): append >= 100 k leaves/s; inclusion proof < 1 ms at 10 M leaves.

Three measurements, one run, one machine:

* ``append_many``: ``RocksLedger.append_many`` in batches of ``--batch`` event hashes (the
  duplicate check is one multi-get per batch; completed tiles of 256 leaves, the in-progress
  tiles and the event-hash index are committed atomically once per batch) into an empty store --
  ``--append`` leaves;
* ``memory_append``: ``MerkleLog.append`` into the pure in-memory store, as the in-run reference;
* ``append``: the same through ``RocksLedger.append`` one leaf at a time (commit every batch);
* ``prove``: ``--proofs`` inclusion proofs of random leaves in the full tree of ``--leaves``
  leaves (RocksDB reads of the ~log256(n) tiles on the path, a small tile cache), each verified outside the timed
  region; p50/p99/max latency. The tree is built with ``RocksLedger.bulk_build`` (hash every
  level in memory, write sorted SST files, ingest) and the build time is reported.

Usage: ``python benchmarks/ledger.py [--leaves 10000000] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

from common import machine  # benchmarks/common.py (scripts run from benchmarks/)

from swarmlog.streams import merkle as m
from swarmlog.streams.ledger_store import RocksLedger


def _hashes(n: int, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    return [rnd.randbytes(32) for _ in range(n)]


def bench_append(path: str, leaves: list[bytes], batch: int, one_by_one: bool) -> dict[str, Any]:
    ledger = RocksLedger(path)
    started = time.perf_counter()
    for start in range(0, len(leaves), batch):
        chunk = leaves[start : start + batch]
        if one_by_one:
            for h in chunk:
                ledger.append(h)
        else:
            ledger.append_many(chunk)
        ledger.commit()
    seconds = time.perf_counter() - started
    root = ledger.root()
    ledger.close()
    assert root == m.root(leaves), "RocksDB ledger root differs from the pure computation"
    return {"leaves": len(leaves), "seconds": round(seconds, 3), "leaves_per_s": round(len(leaves) / seconds)}


def bench_prove(path: str, n: int, proofs: int, seed: int) -> dict[str, Any]:
    event_hashes = _hashes(n, seed)
    started = time.perf_counter()
    ledger = RocksLedger.bulk_build(path, event_hashes, index=False,
                                    progress=lambda msg: print(f"  build: {msg}", file=sys.stderr))
    build_s = time.perf_counter() - started
    root = ledger.root()
    gc.collect()
    gc.freeze()  # the 10 M setup objects are long-lived: keep GC passes over them out of the timings
    rnd = random.Random(seed + 1)
    picks = [rnd.randrange(n) for _ in range(proofs)]
    latencies = []
    results = []
    for index in picks:
        t0 = time.perf_counter()
        path_ = ledger.inclusion_proof(index)
        latencies.append(time.perf_counter() - t0)
        results.append(path_)
    for index, path_ in zip(picks, results, strict=True):
        m.verify_inclusion(m.leaf_hash(event_hashes[index]), index, n, path_, root)
    ledger.close()
    latencies.sort()
    ms = [x * 1000 for x in latencies]
    return {"leaves": n, "build_seconds": round(build_s, 1), "proofs": proofs,
            "proof_hashes": len(results[0]) if results else 0,
            "p50_ms": round(statistics.median(ms), 4), "p99_ms": round(ms[int(len(ms) * 0.99) - 1], 4),
            "max_ms": round(ms[-1], 4), "all_verified": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leaves", type=int, default=10_000_000, help="tree size for the proof latency")
    parser.add_argument("--append", type=int, default=1_000_000, help="leaves appended in the append runs")
    parser.add_argument("--batch", type=int, default=10_000, help="leaves per append_many batch / commit")
    parser.add_argument("--proofs", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--dir", default=None, help="where the RocksDB directories go (default: a temp dir)")
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args()
    root_dir = tempfile.mkdtemp(prefix="swarmlog-ledger-bench-", dir=args.dir)
    try:
        leaves = _hashes(args.append, args.seed)
        result: dict[str, Any] = {"benchmark": "ledger", "machine": machine()}
        started = time.perf_counter()
        reference = m.MerkleLog()
        for h in leaves:
            reference.append(h)
        memory_s = time.perf_counter() - started
        # same leaves into the pure in-memory log: the ratio shows what RocksDB costs, whatever the load
        result["memory_append"] = {"leaves": len(leaves), "seconds": round(memory_s, 3),
                                   "leaves_per_s": round(len(leaves) / memory_s)}
        del reference
        result["append_many"] = bench_append(os.path.join(root_dir, "many"), leaves, args.batch, False)
        print(f"append_many: {result['append_many']}", file=sys.stderr)
        single = leaves[: max(args.append // 5, 1)]
        result["append"] = bench_append(os.path.join(root_dir, "single"), single, args.batch, True)
        print(f"append: {result['append']}", file=sys.stderr)
        result["prove"] = bench_prove(os.path.join(root_dir, "tree"), args.leaves, args.proofs, args.seed)
    finally:
        shutil.rmtree(root_dir, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text + "\n")
    prove = result["prove"]
    print(f"append_many {result['append_many']['leaves_per_s']:,} leaves/s, append {result['append']['leaves_per_s']:,}"
          f" leaves/s; inclusion proof at {prove['leaves']:,} leaves p50 {prove['p50_ms']} ms p99 {prove['p99_ms']} ms"
          f" (build {prove['build_seconds']} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
