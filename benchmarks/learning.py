"""Prequential evaluation of the online-learning API on data sets that ship inside the river wheel.

No download: TrumpApproval (regression, 1 001 rows), Phishing (binary classification,
1 250 rows), AirlinePassengers (monthly series, 144 rows) and WaterFlow (hourly series,
1 268 rows) are files inside ``river/datasets``; Bikes, CreditCard, HTTP, SMTP … need a
download and are not used. Anomaly and drift detection have no labelled bundled data
set, so they are measured on synthetic streams with a known change point.

Prequential (test-then-train): every row is first predicted, scored, then learned.
Each model is compared with the naive baseline of its task, measured in the same run:

* regression — ``LatencyPredictor`` (log-linear SGD, split-conformal 90 % interval) vs the
  running mean: MAE, interval coverage (measured), learn + predict rate;
* classification — ``SuccessClassifier`` (logistic SGD) vs the majority class: accuracy,
  ROC AUC, rate;
* forecasting — ``SeriesForecaster`` (SNARIMAX and Holt-Winters) vs seasonal-naive,
  one step ahead after two seasons: MAE, MAPE, rate;
* detection — ``ZScoreDetector`` and ``DriftDetector`` (Page-Hinkley, ADWIN) on a 6-sigma
  step: samples to detection and false alarms before the step, over 20 seeds.

Usage: ``python benchmarks/learning.py [--json out.json]``. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

from common import machine  # benchmarks/common.py (scripts run from benchmarks/)
from river import datasets, metrics

from swarmlog.projections.forecast import SeriesForecaster
from swarmlog.projections.learning import (
    RIVER_VERSION,
    DriftDetector,
    LatencyPredictor,
    SuccessClassifier,
    ZScoreDetector,
)


def regression() -> dict[str, Any]:
    rows = list(datasets.TrumpApproval())
    model = LatencyPredictor(alpha=0.1)
    mae_model, mae_mean = metrics.MAE(), metrics.MAE()
    mean = 0.0
    t = time.perf_counter()
    for x, y in rows:
        mae_model.update(y, model.predict(x))
        model.learn(x, y)
    model_s = time.perf_counter() - t
    t = time.perf_counter()
    for n, (_x, y) in enumerate(rows, start=1):
        mae_mean.update(y, mean)
        mean += (y - mean) / n
    mean_s = time.perf_counter() - t
    return {"dataset": "TrumpApproval", "rows": len(rows),
            "model": {"mae": mae_model.get(), "interval_coverage": model.coverage, "nominal_coverage": 0.9,
                      "rows_per_s": len(rows) / model_s},
            "baseline_mean": {"mae": mae_mean.get(), "rows_per_s": len(rows) / mean_s}}


def classification() -> dict[str, Any]:
    rows = list(datasets.Phishing())
    clf = SuccessClassifier()
    acc, auc = metrics.Accuracy(), metrics.ROCAUC()
    base_acc, base_auc = metrics.Accuracy(), metrics.ROCAUC()
    counts: Counter[bool] = Counter()
    t = time.perf_counter()
    for x, y in rows:
        p = clf.predict(x)
        acc.update(y, p >= 0.5)
        auc.update(y, {True: p, False: 1 - p})
        clf.learn(x, y)
    model_s = time.perf_counter() - t
    for _x, y in rows:
        majority = counts.most_common(1)[0][0] if counts else False
        share = counts[True] / sum(counts.values()) if counts else 0.5
        base_acc.update(y, majority)
        base_auc.update(y, {True: share, False: 1 - share})
        counts[y] += 1
    return {"dataset": "Phishing", "rows": len(rows),
            "model": {"accuracy": acc.get(), "roc_auc": auc.get(), "rows_per_s": len(rows) / model_s},
            "baseline_majority": {"accuracy": base_acc.get(), "roc_auc": base_auc.get()}}


def forecasting(name: str, series: list[float], season: int) -> dict[str, Any]:
    out: dict[str, Any] = {"dataset": name, "rows": len(series), "season": season}
    naive_mae = naive_ape = 0.0
    for model in ("snarimax", "holt-winters"):
        f = SeriesForecaster(model, season=season)
        mae = ape = 0.0
        n = 0
        naive_mae = naive_ape = 0.0
        t = time.perf_counter()
        for i, y in enumerate(series):
            if f.ready:
                pred = f.forecast(1)[0][0]
                naive = series[i - season]
                mae += abs(pred - y)
                naive_mae += abs(naive - y)
                if y:
                    ape += abs(pred - y) / abs(y)
                    naive_ape += abs(naive - y) / abs(y)
                n += 1
            f.learn(y)
        elapsed = time.perf_counter() - t
        out[model] = {"mae": mae / n, "mape": ape / n, "scored": n, "rows_per_s": len(series) / elapsed}
        out["baseline_seasonal_naive"] = {"mae": naive_mae / n, "mape": naive_ape / n}
    return out


def detection(seeds: int = 20) -> dict[str, Any]:
    result: dict[str, Any] = {"stream": "N(100, 5), 1 000 samples, then a step to N(130, 5)", "seeds": seeds}
    makers: dict[str, Any] = {
        "zscore(4)": lambda: ZScoreDetector(threshold=4.0),
        "page-hinkley": lambda: DriftDetector("page-hinkley", delta=2.5, threshold=100.0),
        "adwin": lambda: DriftDetector("adwin"),
    }
    for name, make in makers.items():
        delays: list[int] = []
        false_alarms = 0
        missed = 0
        for seed in range(seeds):
            rng = random.Random(seed)
            det = make()
            for _ in range(1000):
                v = rng.gauss(100, 5)
                hit = det.update(v)[1] if name.startswith("zscore") else det.update(v)[0]
                false_alarms += 1 if hit else 0
            for i in range(500):
                v = rng.gauss(130, 5)
                hit = det.update(v)[1] if name.startswith("zscore") else det.update(v)[0]
                if hit:
                    delays.append(i + 1)
                    break
            else:
                missed += 1
        result[name] = {"median_samples_to_detect": statistics.median(delays) if delays else None,
                        "max_samples_to_detect": max(delays) if delays else None, "missed": missed,
                        "false_alarms_per_1000": false_alarms / seeds}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="Also write the document here.")
    args = parser.parse_args()
    airline = [float(y) for _x, y in datasets.AirlinePassengers()]
    water = [float(y) for _x, y in datasets.WaterFlow()]
    rng = random.Random(4)
    synthetic = [max(0.0, 200 + 80 * math.sin(2 * math.pi * h / 24) + 0.2 * h + rng.gauss(0, 10))
                 for h in range(24 * 28)]
    doc = {
        "benchmark": "learning (prequential, test-then-train)", "river": RIVER_VERSION, "machine": machine(),
        "regression": regression(), "classification": classification(),
        "forecasting": [forecasting("AirlinePassengers (monthly)", airline, 12),
                        forecasting("WaterFlow (hourly)", water, 24),
                        forecasting("synthetic daily cycle + trend + noise (hourly)", synthetic, 24)],
        "detection": detection(),
    }
    text = json.dumps(doc, indent=2, default=str)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
