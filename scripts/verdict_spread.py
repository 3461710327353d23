"""Spread of the notebooks' headline numbers across runs, beside their bands.

Each notebook's checks cell appends its measured numbers to ``$REVQ_VERDICT_LOG`` (one JSON line per run,
with the thread count and whether the C++ search kernel was on). Run the notebooks in several settings
(notebooks/README.md, "How a notebook's checks work"), then:

    python scripts/verdict_spread.py spread.jsonl

prints, per number: the runs' min and max, the spread (max - min), its committed value and band, and how
much of the band the largest distance from the committed value uses.
"""
import argparse
import json
from collections import defaultdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log", help="the file $REVQ_VERDICT_LOG pointed to")
    args = parser.parse_args()
    values, bands, settings = defaultdict(list), {}, defaultdict(set)
    with open(args.log) as log:
        for line in log:
            record = json.loads(line)
            settings[record["notebook"]].add(f"threads={record['threads']} kernel={record['cpu_kernel']} "
                                             f"arch={record.get('kernel_arch', 'native')} "
                                             f"aten={record.get('aten_capability') or 'default'}")
            for name, number in record["measured"].items():
                key = (record["notebook"], name)
                values[key].append(number["value"])
                bands[key] = (number["committed"], number["band"])
    print(f"{'notebook':20s} {'number':58s} {'runs':>4s} {'min':>10s} {'max':>10s} {'spread':>9s} "
          f"{'committed':>10s} {'band':>8s} {'used':>5s}")
    for (notebook, name), runs in values.items():
        committed, band = bands[notebook, name]
        used = max(abs(value - committed) for value in runs) / band if band else float("inf")
        print(f"{notebook:20s} {name[:58]:58s} {len(runs):4d} {min(runs):10.5g} {max(runs):10.5g} "
              f"{max(runs) - min(runs):9.3g} {committed:10.5g} {band:8.3g} {used:5.0%}")
    for notebook, seen in settings.items():
        print(f"{notebook}: {len(seen)} settings: {', '.join(sorted(seen))}")


if __name__ == "__main__":
    main()
