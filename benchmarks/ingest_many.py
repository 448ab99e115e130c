"""Many small files: does the per-file ingest cost stay flat as the lake grows? (issue 12)

Generates N small CSV files (default 10,000 x 20 rows) over E entities (default 500, so each
entity/date partition collects N/E files), every ``--overlap-every``-th file repeating the last
rows of the previous file of its entity (identical values: counted as duplicates, which makes
the dedup against the lake read earlier files). Then ingests them all in ONE
``cnnlstm.ingest.ingest`` call (the library API, with a progress bar) into a fresh lake and
prints the per-file wall time of the first and the last 1,000 files (or tenth, for small N),
their ratio (target <= 1.3), the absolute figures, the machine and the date.

    python benchmarks/ingest_many.py [--files 10000] [--rows 20] [--entities 500]
                                     [--overlap-every 10] [--work DIR] [--keep]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

CHANNELS = ["ch0", "ch1", "ch2"]
START = datetime(2024, 1, 1, tzinfo=UTC)


def _value(entity: int, sec: int, ch: int) -> str:
    """A deterministic value of (entity, time, channel): an overlap repeats identical rows."""
    return f"{((entity * 7919 + sec * 104729 + ch * 15485863) % 20001) / 100 - 100:.2f}"


def generate(folder: Path, files: int, rows: int, entities: int, overlap_every: int) -> int:
    """Write the files; returns the number of duplicate rows they hold (the overlaps)."""
    folder.mkdir(parents=True, exist_ok=True)
    nxt = [0] * entities  # next second per entity
    dups = 0
    header = "device,time," + ",".join(CHANNELS) + ",label\n"
    for i in range(files):
        e = i % entities
        start = nxt[e]
        if overlap_every and i >= entities and i % overlap_every == 0:
            back = min(5, rows - 1, start)
            start -= back
            dups += back
        lines = [header]
        for s in range(start, start + rows):
            t = (START + timedelta(seconds=s)).strftime("%Y-%m-%dT%H:%M:%SZ")
            vals = ",".join(_value(e, s, c) for c in range(len(CHANNELS)))
            lines.append(f"dev-{e:04d},{t},{vals},{(s // 60) % 5}\n")
        (folder / f"f{i:06d}.csv").write_text("".join(lines))
        nxt[e] = start + rows
    return dups


def config(lake: Path):
    from cnnlstm.config import config_from_dict

    return config_from_dict(
        {
            "data": {
                "name": "bench-many",
                "entity": {"column": "device"},
                "timestamp": {"column": "time", "format": "iso"},
                "channels": [{"name": c, "min": -100, "max": 100} for c in CHANNELS],
                "label": {"column": "label", "dtype": "int"},
            },
            "lake": {"uri": str(lake)},
        }
    )


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--rows", type=int, default=20)
    ap.add_argument("--entities", type=int, default=500)
    ap.add_argument("--overlap-every", type=int, default=10)
    ap.add_argument("--work", type=Path, default=None, help="folder for files and lake (temp)")
    ap.add_argument("--keep", action="store_true", help="keep the files and the lake")
    a = ap.parse_args()

    import polars as pl
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from cnnlstm.ingest import ingest
    from cnnlstm.lake import lake_summary

    work = a.work or Path(tempfile.mkdtemp(prefix="ingest_many-"))
    landing, lake = work / "landing", work / "lake"
    shutil.rmtree(landing, ignore_errors=True)
    shutil.rmtree(lake, ignore_errors=True)
    t0 = time.perf_counter()
    dups = generate(landing, a.files, a.rows, a.entities, a.overlap_every)
    print(
        f"generated {a.files:,} files x {a.rows} rows over {a.entities} entities "
        f"({a.files // a.entities} files per partition, {dups:,} overlapping rows) "
        f"in {time.perf_counter() - t0:.1f} s under {work}",
        flush=True,
    )

    stamps: list[float] = []
    cpu: list[float] = []  # process CPU time: less sensitive than wall time to other jobs
    with Progress(
        TextColumn("[bold]ingest"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ) as progress:
        task = progress.add_task("", total=a.files)

        def tick(rep) -> None:
            stamps.append(time.perf_counter())
            cpu.append(time.process_time())
            progress.update(task, advance=1)

        c0 = time.process_time()
        t0 = time.perf_counter()
        report = ingest(config(lake), [str(landing)], on_file=tick)
        total = time.perf_counter() - t0

    per_file = [b - a_ for a_, b in zip([t0, *stamps[:-1]], stamps, strict=True)]
    per_cpu = [b - a_ for a_, b in zip([c0, *cpu[:-1]], cpu, strict=True)]
    n = len(per_file)
    k = 1000 if n >= 4000 else max(1, n // 10)
    first, last = per_file[:k], per_file[-k:]
    mf, ml = statistics.mean(first), statistics.mean(last)
    cf, cl = statistics.mean(per_cpu[:k]), statistics.mean(per_cpu[-k:])
    t = report.totals()
    expect = a.files * a.rows - dups
    summary = lake_summary(str(lake))
    print(
        f"{n:,} files in {total:.1f} s ({n / total:.1f} files/s); committed {t['committed']:,}, "
        f"rejected {t['rejected']}, failed {t.get('failed', 0)}; rows accepted {t['accepted']:,} "
        f"(expected {expect:,}), duplicates {t['duplicates']:,} (expected {dups:,}), "
        f"quarantined {t['quarantined']}; lake: {summary['rows']:,} rows in "
        f"{summary['data_files']:,} files"
    )
    print(
        f"per file, first {k:,}: mean {mf * 1000:.1f} ms, median "
        f"{statistics.median(first) * 1000:.1f} ms"
    )
    print(
        f"per file, last  {k:,}: mean {ml * 1000:.1f} ms, median "
        f"{statistics.median(last) * 1000:.1f} ms"
    )
    print(f"ratio last/first (mean wall time): {ml / mf:.2f}  (target <= 1.3)")
    print(
        f"CPU time per file: first {cf * 1000:.1f} ms, last {cl * 1000:.1f} ms, "
        f"ratio {cl / cf:.2f}; load average at the end {os.getloadavg()[0]:.1f}"
    )
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores; python {platform.python_version()}, "
        f"polars {pl.__version__}; date {datetime.now(UTC).date()}"
    )
    ok = t["accepted"] == expect and t["duplicates"] == dups and summary["rows"] == expect
    if not ok:
        raise SystemExit("accounting mismatch: see the figures above")
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
