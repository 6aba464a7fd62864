"""How `tributary import transactions` scales: rows/s and peak memory on a file of N rows.

    .venv/bin/python -m tributary.bench_import --rows 10000000 [--shuffled]

Writes a synthetic CSV of N transactions in the contract's schema (random accounts and
amounts, 1% labelled fraud; synthetic, and only for this measurement), imports it in a
child process and prints its wall time and peak RSS beside a baseline from the same
run: a child that only reads the whole file into memory with pyarrow, which is what an
import that holds every row would need at the least. `--shuffled` writes the rows out
of time order, so the import sorts through runs on disk and merges them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HEADER = "event_time,source_account,destination_account,amount,type,channel,is_fraud\n"
TYPES = np.array(["payment", "transfer", "cash_out", "cash_in", "debit"])
CHUNK = 500_000


def write_file(path: Path, rows: int, shuffled: bool, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    start = 1_735_689_600  # 2025-01-01T00:00Z
    with path.open("w") as out:
        out.write(HEADER)
        for first in range(0, rows, CHUNK):
            n = min(CHUNK, rows - first)
            seconds = start + (np.arange(first, first + n) * 3) if not shuffled else \
                start + rng.integers(0, rows * 3, n)
            source = rng.integers(0, max(rows // 20, 2), n)
            dest = (source + 1 + rng.integers(0, max(rows // 20, 2) - 1, n)) % max(rows // 20, 2)
            amount = np.round(rng.lognormal(4, 1.2, n) + 0.01, 2)
            kind = TYPES[rng.integers(0, len(TYPES), n)]
            fraud = (rng.random(n) < 0.01).astype(int)
            out.writelines(f"{t},a{s},a{d},{a},{k},web,{f}\n"
                           for t, s, d, a, k, f in zip(seconds, source, dest, amount, kind, fraud))


def child(code: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of a Python child running `code`; the child reports
    its own peak, so one child's figure never hides another's."""
    report = "; import resource; print('peak-kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code + report], check=True, capture_output=True, text=True)
    wall = time.monotonic() - started
    peak_kib = next(int(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("peak-kib"))
    return wall, peak_kib / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--shuffled", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="var" if Path("var").is_dir() else None) as folder:
        path = Path(folder) / "transactions.csv"
        write_file(path, args.rows, args.shuffled)
        size_mib = path.stat().st_size / 2**20
        read_wall, read_rss = child(f"import pyarrow.csv as c; t = c.read_csv({str(path)!r})")
        code = ("from pathlib import Path; from offline.importers.contract_schema import import_transactions; "
                f"import_transactions(Path({str(path)!r}), Path({folder!r}) / 'world', progress=False)")
        import_wall, import_rss = child(code)
        print(f"file: {args.rows:,} rows, {size_mib:,.0f} MiB, {'shuffled' if args.shuffled else 'in time order'}")
        print(f"{'':<28}{'wall s':>10}{'rows/s':>12}{'peak RSS MiB':>14}")
        print(f"{'pyarrow read_csv (all rows)':<28}{read_wall:>10.1f}{args.rows / read_wall:>12,.0f}{read_rss:>14,.0f}")
        print(f"{'tributary import':<28}{import_wall:>10.1f}{args.rows / import_wall:>12,.0f}{import_rss:>14,.0f}")


if __name__ == "__main__":
    main()
