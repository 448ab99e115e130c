"""How data/hapt/landing/ was made (run once; the output is committed).

Source: the UCI HAPT raw streams as one table (hapt_50hz.parquet, converted from the UCI
"RawData" folder). Written as one CSV.gz per recording session, the way a phone fleet lands
its exports: ``expNN_userMM.csv.gz`` with a header row and one row per 20 ms sample.

    python data/hapt/make_landing.py /path/to/hapt_50hz.parquet data/hapt/landing
"""

import gzip
import sys
from pathlib import Path

import polars as pl


def main(src: str, out: str) -> None:
    df = pl.read_parquet(src).with_columns(pl.col("split", "activity").cast(pl.String))
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    for (exp, user), g in df.sort("experiment", "sample").group_by(
        ["experiment", "user"], maintain_order=True
    ):
        path = outdir / f"exp{exp:02d}_user{user:02d}.csv.gz"
        # mtime=0: the same input gives byte-identical files
        with gzip.GzipFile(path, "wb", compresslevel=9, mtime=0) as f:
            f.write(g.write_csv().encode())
    print(f"{df.height} rows -> {len(list(outdir.glob('*.csv.gz')))} files in {outdir}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
