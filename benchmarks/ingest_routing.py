"""Ingest with the PS3.15 basic profile active vs without rules, on the same corpus, in one run.

Target (the router issue): with the basic profile, at least 80% of the rate without rules.
Run: python benchmarks/ingest_routing.py [--instances N] [--runs R]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
from pathlib import Path

from corpus import CorpusSpec, write_corpus
from ingest_dimse import SENDERS, WARMUP_SEED, machine, measure, run_in_work_dir, start_dopamine

BASIC_PROFILE = Path(__file__).resolve().parents[1] / "rules" / "basic-profile.xml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    return run_in_work_dir(lambda root: _compare(root, args), None, "dopamine-bench-routing-")


def _compare(root: Path, args: argparse.Namespace) -> int:
    corpus = write_corpus(root / "corpus", CorpusSpec(instances=args.instances))
    warmup = write_corpus(root / "warmup", CorpusSpec(instances=50, seed=WARMUP_SEED))
    sender = SENDERS["storescu"]()
    variants = {"no rules": start_dopamine,
                "basic profile": functools.partial(start_dopamine, ruleset=BASIC_PROFILE)}
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for run in range(args.runs):
        order = list(variants) if run % 2 == 0 else list(reversed(variants))
        for name in order:
            rate = measure(variants[name], root / f"{name.replace(' ', '-')}-{run}", sender, warmup, corpus)
            rates[name].append(rate)
            print(f"run {run + 1} {name:<14} {rate:8.1f} instances/s")
    medians = {name: statistics.median(r) for name, r in rates.items()}
    print(f"\n{'variant':<14} {'median inst/s':>13}")
    for name, value in medians.items():
        print(f"{name:<14} {value:>13.1f}")
    print(f"basic profile / no rules: {medians['basic profile'] / medians['no rules']:.2f} (target >= 0.80)")
    return 0

if __name__ == "__main__":
    sys.exit(main())
