"""Box fusion of several readers on VinDr-CXR: speed and equality against ensemble-boxes,
and the radiologists' agreement.

Data: the per-radiologist boxes of all 15,000 VinDr-CXR training images (3 of 17 radiologists
read each image), from ``$CROWDMED_DATA/vindr_cxr_boxes_hieupham`` (the Kaggle ``train.csv``
split in two files; research-only data, read in place, never copied). Class 14 "No finding"
(box 0, 0, 1, 1) becomes a reading without boxes, so every image keeps its 3 readers in the
agreement denominator.

Part A (speed, equality): ``crowdmed.aggregation.fuse_boxes`` on the whole table against
``ensemble_boxes.weighted_boxes_fusion`` called once per image, in the same run, with the same
configuration (IoU 0.4, every score 1, model weights = reader proficiencies, ``conf_type="avg"``,
boxes in [0, 1] for ensemble-boxes, the same processing order). ensemble-boxes is timed on
prepared per-image lists, only over the images that have boxes, and without converting its
output back to pixels; our time includes validation of the table and the output frame. The
proficiencies are those our estimation finds (timed separately). Reported: median wall time
over repeats, the speed-up, and the largest coordinate difference (pixels) over all fused
boxes. The same again with scored boxes (a seeded random score in (0.01, 1) per box, the
``score`` column of ``fuse_boxes``), where the fused score is compared too.

Part B (agreement): per class, how many fused boxes 1, 2 or 3 radiologists support; per
radiologist, sensitivity and false positives per image against the majority consensus (fused
boxes supported by at least 2 of the 3 readers), matched one to one at IoU >= 0.4; and the
matched-box F1 between pairs of radiologists on the images they both read.

Usage::

    python benchmarks/box_fusion.py [--repeats 5] [--quick]

The full run writes the ``box_fusion`` section of ``BENCHMARKS.md`` and
``benchmarks/results/box_fusion.json``; ``--quick`` (1,500 images, 1 repeat) only prints.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import REPO, machine_line, update_section, write_json
from crowdmed.aggregation.detection.box_fusion import estimate_proficiency, fuse_boxes
from crowdmed.data.boxes import check_boxes
from crowdmed.quality.box_agreement import pairwise_reader_f1, reader_agreement

DATASET = "vindr_cxr_boxes_hieupham"
COLS = ["xmin", "ymin", "xmax", "ymax"]
IOU = 0.4
CLASS_NAMES = [
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "ILD",
    "Infiltration", "Lung Opacity", "Nodule/Mass", "Other lesion", "Pleural effusion",
    "Pleural thickening", "Pneumothorax", "Pulmonary fibrosis",
]  # fmt: skip
NO_FINDING = 14


def load(n_images: int | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The readers' box table (pixels) and the image sizes."""
    root = Path(os.environ.get("CROWDMED_DATA", REPO.parent / "shared" / "data"))
    folder = root / DATASET / "data" / "VinCXR" / "labels_det"
    if not folder.is_dir():
        raise SystemExit(
            f"VinDr-CXR reader boxes not found at {folder}. Set CROWDMED_DATA to the folder that "
            f"holds '{DATASET}/' (default <repo>/../shared/data)."
        )
    raw = pd.concat(
        [pd.read_csv(folder / f"full_allboxes_{s}.csv") for s in ("train", "val")],
        ignore_index=True,
    )
    if n_images is not None:
        keep = np.sort(raw["image_id"].unique())[:n_images]
        raw = raw[raw["image_id"].isin(keep)].reset_index(drop=True)
    frame = pd.DataFrame(
        {"image": raw["image_id"], "reader": raw["rad_id"], "class": raw["class_id"]}
    )
    frame[COLS] = raw[["x_min", "y_min", "x_max", "y_max"]].to_numpy(np.float64)
    frame.loc[raw["class_id"].to_numpy() == NO_FINDING, ["class", *COLS]] = np.nan
    sizes = (
        raw[["image_id", "image_width", "image_height"]]
        .drop_duplicates("image_id")
        .rename(columns={"image_id": "image", "image_width": "width", "image_height": "height"})
    )
    return frame, sizes


def ensemble_inputs(
    frame: pd.DataFrame, sizes: pd.DataFrame, weight: dict[str, float]
) -> list[tuple[str, list[np.ndarray], list[np.ndarray], list[np.ndarray], np.ndarray]]:
    """Per-image lists for ensemble-boxes, laid out so it visits boxes in our canonical order.

    ensemble-boxes sorts each label's boxes by score x weight with ``argsort()[::-1]``; with
    distinct reader weights the only ties are among one reader's boxes, and the positions of
    each reader's block are filled with that reader's boxes in our order (by coordinates).
    """
    size = sizes.set_index("image")[["width", "height"]]
    boxes = frame.dropna(subset=["class"])
    boxes = boxes.sort_values(["image", "class", "reader", *COLS], kind="stable")
    readers_of = frame.groupby("image")["reader"].unique()
    img = boxes["image"].to_numpy()
    cls = boxes["class"].to_numpy().astype(int)
    rdr = boxes["reader"].to_numpy()
    xy = boxes[COLS].to_numpy()
    starts = np.flatnonzero(np.r_[True, img[1:] != img[:-1]])
    ends = np.r_[starts[1:], len(img)]
    jobs = []
    for s0, e0 in zip(starts, ends, strict=True):
        image = img[s0]
        w, h = size.loc[image]
        readers = sorted(readers_of[image])
        per_reader: dict[str, list[tuple[int, np.ndarray]]] = {r: [] for r in readers}
        for label in np.unique(cls[s0:e0]):
            sel = np.flatnonzero(cls[s0:e0] == label) + s0  # sorted by reader, then coordinates
            counts = [int(np.sum(rdr[sel] == r)) for r in readers]
            values = np.array(
                [1.0 * weight[r] for r, c in zip(readers, counts, strict=True) for _ in range(c)]
            )
            perm = values.argsort()[::-1]
            owner = np.repeat(np.arange(len(readers)), counts)
            for t, r in enumerate(readers):
                if not counts[t]:
                    continue
                canonical = xy[sel[rdr[sel] == r]] / [w, h, w, h]
                start = int(np.sum(counts[:t]))
                visited = [p - start for p in perm if owner[p] == t]
                arranged = np.empty_like(canonical)
                arranged[visited] = canonical
                per_reader[r].extend((int(label), row) for row in arranged)
        b = [np.array([x for _, x in per_reader[r]]).reshape(-1, 4) for r in readers]
        s = [np.ones(len(per_reader[r])) for r in readers]
        lab_ = [np.array([c for c, _ in per_reader[r]], dtype=float) for r in readers]
        jobs.append((image, b, s, lab_, np.array([weight[r] for r in readers])))
    return jobs


def scored_inputs(
    frame: pd.DataFrame, sizes: pd.DataFrame, weight: dict[str, float]
) -> list[tuple[str, list[np.ndarray], list[np.ndarray], list[np.ndarray], np.ndarray]]:
    """Per-image lists of scored boxes for ensemble-boxes (every reader of the image listed).

    Random continuous scores make every score x weight distinct, so ensemble-boxes' sort
    visits the boxes in our order whatever the layout.
    """
    size = sizes.set_index("image")[["width", "height"]]
    boxes = frame.dropna(subset=["class"])
    readers_of = frame.groupby("image")["reader"].unique()
    jobs = []
    for image, g in boxes.groupby("image", sort=True):
        w, h = size.loc[image]
        readers = sorted(readers_of[image])
        per = [g[g["reader"] == r] for r in readers]
        jobs.append(
            (
                image,
                [p[COLS].to_numpy().reshape(-1, 4) / [w, h, w, h] for p in per],
                [p["score"].to_numpy() for p in per],
                [p["class"].to_numpy(float) for p in per],
                np.array([weight[r] for r in readers]),
            )
        )
    return jobs


def compare_scored(ours: pd.DataFrame, theirs: list[Any], sizes: pd.DataFrame) -> dict[str, Any]:
    """Largest differences of fused boxes (pixels) and fused scores between the two fusions."""
    size = sizes.set_index("image")[["width", "height"]]
    rows = []
    for image, eb, es, el in theirs:
        w, h = size.loc[image]
        rows.append(
            pd.DataFrame(eb * [w, h, w, h], columns=COLS).assign(
                **{"class": el.astype(int), "score": es, "image": image}
            )
        )
    t = pd.concat(rows, ignore_index=True)
    key = ["image", "class", *COLS]

    def order(df: pd.DataFrame) -> pd.DataFrame:
        k = df[key].copy()
        k[COLS] = k[COLS].round(2)
        return df.loc[k.sort_values(key, kind="stable").index].reset_index(drop=True)

    a, b = order(ours), order(t)
    res: dict[str, Any] = {"n_fused_ours": len(a), "n_fused_ensemble": len(b)}
    same = len(a) == len(b) and bool(
        (a["image"].to_numpy() == b["image"].to_numpy()).all()
        and (a["class"].to_numpy() == b["class"].to_numpy()).all()
    )
    res["identical_clusters"] = same
    if same:
        res["max_coordinate_difference_px"] = float(
            np.abs(a[COLS].to_numpy() - b[COLS].to_numpy()).max()
        )
        res["max_score_difference"] = float(
            np.abs(a["score"].to_numpy() - b["score"].to_numpy()).max()
        )
    return res


def run_ensemble(jobs: list[Any]) -> tuple[float, list[Any]]:
    from ensemble_boxes import weighted_boxes_fusion

    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        for image, b, s, lab, w in jobs:
            out.append(
                (image, *weighted_boxes_fusion(b, s, lab, weights=w, iou_thr=IOU, conf_type="avg"))
            )
        seconds = time.perf_counter() - start
    return seconds, out


def compare(
    ours: pd.DataFrame,
    theirs: list[Any],
    sizes: pd.DataFrame,
    weight: dict[str, float],
    readers_of: dict[str, list[str]],
) -> dict[str, Any]:
    """Largest differences between the two fusions, box by box (pixels)."""
    size = sizes.set_index("image")[["width", "height"]]
    rows = []
    for image, eb, es, el in theirs:
        w, h = size.loc[image]
        t = pd.DataFrame(eb * [w, h, w, h], columns=COLS)
        t["class"] = el.astype(int)
        t["score"] = es
        t["image"] = image
        rows.append(t)
    t = pd.concat(rows, ignore_index=True)
    key = ["image", "class", *COLS]

    def order(df: pd.DataFrame) -> pd.DataFrame:
        k = df[key].copy()
        k[COLS] = k[COLS].round(2)
        return df.loc[k.sort_values(key, kind="stable").index].reset_index(drop=True)

    a, b = order(ours), order(t)
    same_count = len(a) == len(b)
    res: dict[str, Any] = {"n_fused_ours": len(a), "n_fused_ensemble": len(b)}
    if not same_count or not (a["image"].to_numpy() == b["image"].to_numpy()).all():
        res["identical_clusters"] = False
        return res
    res["identical_clusters"] = bool((a["class"].to_numpy() == b["class"].to_numpy()).all())
    res["max_coordinate_difference_px"] = float(
        np.abs(a[COLS].to_numpy() - b[COLS].to_numpy()).max()
    )
    wh = (
        a["image"].map(size["width"]).to_numpy(float),
        a["image"].map(size["height"]).to_numpy(float),
    )
    scale = np.stack([wh[0], wh[1], wh[0], wh[1]], axis=1)
    res["max_coordinate_difference_normalised"] = float(
        (np.abs(a[COLS].to_numpy() - b[COLS].to_numpy()) / scale).max()
    )
    total = a["image"].map({img: sum(weight[r] for r in rs) for img, rs in readers_of.items()})
    expected = (
        np.array([sum(weight[r] for r in rs.split(";")) for rs in a["readers"]]) / total.to_numpy()
    )
    one_each = (a["n_boxes"] == a["n_readers"]).to_numpy()
    res["max_confidence_difference"] = float(
        np.abs(b["score"].to_numpy()[one_each] - expected[one_each]).max()
    )
    res["n_compared_confidence"] = int(one_each.sum())
    return res


def markdown_table(df: pd.DataFrame, floatfmt: str = "{:.3f}") -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in df.iterrows():
        cells = []
        for v in row:
            if isinstance(v, (float, np.floating)):
                cells.append("–" if np.isnan(v) else floatfmt.format(v))
            else:
                cells.append(f"{v:,}" if isinstance(v, (int, np.integer)) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds")
    ap.add_argument("--quick", action="store_true", help="1,500 images, print only")
    args = ap.parse_args()
    n_images = 1500 if args.quick else None
    repeats = 1 if args.quick else args.repeats

    frame, sizes = load(n_images)
    check_boxes(frame, image_sizes=sizes)  # every box inside its image
    readers_of = frame.groupby("image")["reader"].unique().map(list).to_dict()
    n_boxes = int(frame["xmin"].notna().sum())
    print(f"{frame['image'].nunique():,} images, {n_boxes:,} boxes", flush=True)

    # proficiency estimation (default fuse_boxes), timed
    est_times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        prof = estimate_proficiency(frame, iou_thr=IOU)
        est_times.append(time.perf_counter() - t0)
    weight = {str(r): float(w) for r, w in prof.items()}
    with_boxes = sorted(frame.dropna(subset=["class"])["reader"].unique())
    values = [weight[r] for r in with_boxes]
    if len(set(values)) != len(values):
        raise SystemExit(
            "estimated proficiencies tie; the order-matching layout needs distinct ones"
        )

    t0 = time.perf_counter()
    jobs = ensemble_inputs(frame, sizes, weight)
    prep_seconds = time.perf_counter() - t0

    # interleaved timing, so a burst of load on the shared machine hits both methods alike:
    # each round times fuse_boxes three times and the ensemble-boxes loop once
    fuse_times: list[float] = []
    default_times: list[float] = []
    ens_times: list[float] = []
    theirs: list[Any] = []
    for _ in range(repeats):
        for _ in range(3):
            t0 = time.perf_counter()
            fused = fuse_boxes(frame, iou_thr=IOU, proficiency=weight)
            fuse_times.append(time.perf_counter() - t0)
        seconds, theirs = run_ensemble(jobs)
        ens_times.append(seconds)
        t0 = time.perf_counter()
        fused_default = fuse_boxes(frame, iou_thr=IOU, estimate_proficiency=True)
        default_times.append(time.perf_counter() - t0)
    print(
        f"fuse_boxes {np.median(fuse_times):.3f} s; ensemble-boxes loop "
        f"{np.median(ens_times):.3f} s over {len(jobs):,} images",
        flush=True,
    )
    cmp = compare(fused, theirs, sizes, weight, readers_of)
    print(cmp, flush=True)
    speedup = float(np.median(ens_times) / np.median(fuse_times))
    speedup_best = float(np.min(ens_times) / np.min(fuse_times))

    # scored boxes: a seeded random score per box, the same weights
    rng = np.random.default_rng(0)
    scored = frame.assign(
        score=np.where(frame["class"].notna(), rng.uniform(0.01, 1.0, len(frame)), np.nan)
    )
    scored_jobs = scored_inputs(scored, sizes, weight)
    scored_times: list[float] = []
    scored_ens_times: list[float] = []
    scored_theirs: list[Any] = []
    for _ in range(repeats):
        for _ in range(3):
            t0 = time.perf_counter()
            fused_scored = fuse_boxes(scored, iou_thr=IOU, proficiency=weight)
            scored_times.append(time.perf_counter() - t0)
        seconds, scored_theirs = run_ensemble(scored_jobs)
        scored_ens_times.append(seconds)
    cmp_scored = compare_scored(fused_scored, scored_theirs, sizes)
    print(cmp_scored, flush=True)
    speedup_scored = float(np.median(scored_ens_times) / np.median(scored_times))

    # ---------------------------------------------------------------- agreement
    t0 = time.perf_counter()
    per_reader = reader_agreement(frame, fused_default, iou_thr=IOU)
    pairwise = pairwise_reader_f1(frame, iou_thr=IOU)
    agreement_seconds = time.perf_counter() - t0
    counts = pd.crosstab(fused_default["class"], fused_default["n_readers"])
    per_class = pd.DataFrame(
        {
            "class": [f"{c} {CLASS_NAMES[int(c)]}" for c in counts.index],
            "fused boxes": counts.sum(axis=1).to_numpy(),
            **{
                f"{k} reader{'s' if k > 1 else ''}": (counts[k] / counts.sum(axis=1)).to_numpy()
                for k in counts.columns
            },
            "mean confidence (boxes)": fused_default.groupby("class")["confidence"]
            .mean()
            .to_numpy(),
            "mean agreement": fused_default.groupby("class")["agreement"].mean().to_numpy(),
        }
    )
    active = per_reader[per_reader["n_boxes"] > 0]["reader"].tolist()
    silent = per_reader[per_reader["n_boxes"] == 0]
    pw = pairwise.loc[active, active]
    shared = frame.drop_duplicates(["image", "reader"])
    read = pd.crosstab(shared["image"], shared["reader"]).astype(int)
    shared_images = read.T @ read
    iu = np.triu_indices(len(active), 1)
    pair_values = pw.to_numpy()[iu]
    pair_shared = shared_images.loc[active, active].to_numpy()[iu]
    pairs_ok = ~np.isnan(pair_values) & (pair_shared >= 50)

    ok_values = pair_values[pairs_ok]
    f1_median, f1_min, f1_max = (
        (float(np.median(ok_values)), float(ok_values.min()), float(ok_values.max()))
        if len(ok_values)
        else (float("nan"),) * 3
    )

    # ---------------------------------------------------------------- report
    scale = f"{frame['image'].nunique():,} images, {n_boxes:,} boxes of 17 radiologists"
    timing = pd.DataFrame(
        {
            "method": [
                "crowdmed fuse_boxes (given proficiency)",
                "crowdmed fuse_boxes (estimate_proficiency=True)",
                "crowdmed estimate_proficiency",
                "ensemble-boxes weighted_boxes_fusion, looped per image",
                "scored boxes: crowdmed fuse_boxes (given proficiency)",
                "scored boxes: ensemble-boxes weighted_boxes_fusion, looped per image",
            ],
            "median s": [
                np.median(fuse_times), np.median(default_times), np.median(est_times),
                np.median(ens_times), np.median(scored_times), np.median(scored_ens_times),
            ],
            "min s": [
                np.min(fuse_times), np.min(default_times), np.min(est_times), np.min(ens_times),
                np.min(scored_times), np.min(scored_ens_times),
            ],
            "runs": [
                len(fuse_times), len(default_times), len(est_times), len(ens_times),
                len(scored_times), len(scored_ens_times),
            ],
        }
    )  # fmt: skip
    pr = per_reader[per_reader["n_boxes"] > 0][
        ["reader", "n_images", "n_boxes", "n_consensus", "sensitivity", "precision",
         "fp_per_image", "proficiency"]
    ]  # fmt: skip
    pw_md = pw.copy()
    pw_md.insert(0, "F1", pw_md.index)
    md = f"""## Box fusion of several readers (VinDr-CXR radiologists)

`python benchmarks/box_fusion.py` — {machine_line()}

Data: the per-radiologist boxes of the VinDr-CXR training set ({scale}; each image read by
3 radiologists; "No finding" rows are readings without boxes). IoU threshold {IOU}.

**Speed and equality with ensemble-boxes** (same run, same configuration: every score 1
except in the two "scored boxes" rows, model weights = the reader proficiencies our estimation
finds, `conf_type="avg"`, the same processing
order; ensemble-boxes on [0, 1] boxes, timed on prepared per-image lists over the
{len(jobs):,} images with boxes, output not converted back to pixels):

{markdown_table(timing)}

- Speed-up of `fuse_boxes` over the ensemble-boxes loop: **{speedup:.1f}×** (ratio of
  medians; {speedup_best:.1f}× between the fastest runs). Runs are interleaved on a shared
  2-core machine, so single timings vary by tens of percent.
- Same clusters: {cmp.get("identical_clusters")} ({cmp["n_fused_ours"]:,} fused boxes vs
  {cmp["n_fused_ensemble"]:,}); largest coordinate difference
  {cmp.get("max_coordinate_difference_px", float("nan")):.2e} px, or
  {cmp.get("max_coordinate_difference_normalised", float("nan")):.1e} of the image size
  (ensemble-boxes keeps fused boxes in float32); largest difference between ensemble-boxes'
  confidence and the weighted reader share computed from our clusters
  {cmp.get("max_confidence_difference", float("nan")):.1e}
  ({cmp.get("n_compared_confidence", 0):,} clusters with one box per reader). Our `agreement`
  column is the unweighted share (readers in the cluster / readers of the image); our
  `confidence` column is the fused confidence of Le et al. (2023), Algorithm 1 step 6 (boxes
  in the cluster, capped at the readers of the image).
- Scored boxes (a seeded random score in (0.01, 1) per box in a `score` column, the same
  weights; ensemble-boxes given each image's readers as they come): speed-up
  **{speedup_scored:.1f}×** (ratio of medians). Same clusters:
  {cmp_scored.get("identical_clusters")} ({cmp_scored["n_fused_ours"]:,} fused boxes vs
  {cmp_scored["n_fused_ensemble"]:,}); largest coordinate difference
  {cmp_scored.get("max_coordinate_difference_px", float("nan")):.2e} px; largest difference
  of the fused score (WBF `avg`) {cmp_scored.get("max_score_difference", float("nan")):.1e}.

**Agreement per class** (share of fused boxes supported by 1, 2 or 3 of the image's 3 readers;
fusion weighted by the estimated proficiencies, `estimate_proficiency=True`; `fuse_boxes`
weighs readers equally unless proficiencies are given):

{markdown_table(per_class)}

**Per radiologist against the majority consensus** (fused boxes supported by ≥ 2 of 3 readers;
one-to-one matching at IoU ≥ {IOU}; sensitivity = matched / consensus boxes on the images the
radiologist read; false positives = unmatched boxes per image read; proficiency = the
estimated fusion weight):

{markdown_table(pr)}

{len(silent)} radiologists ({", ".join(silent["reader"])}) read
{int(silent["n_images"].sum()):,} images between them and marked no box at all (all their
readings are "No finding" in this table), so they have no box statistics; they still count in
the agreement denominator of the images they read.

**Pairwise matched-box F1** between the radiologists who marked boxes (images both read;
{int(pairs_ok.sum())} of {len(pair_values)} pairs share ≥ 50 images; their F1 has median
{f1_median:.3f}, range {f1_min:.3f}–{f1_max:.3f}):

{markdown_table(pw_md, "{:.2f}")}

Reader statistics took {agreement_seconds:.2f} s. Raw numbers: `benchmarks/results/box_fusion.json`.
"""
    print(md)
    if args.quick:
        return
    update_section("box_fusion", md)
    write_json(
        REPO / "benchmarks" / "results" / "box_fusion.json",
        {
            "scale": {"n_images": int(frame["image"].nunique()), "n_boxes": n_boxes},
            "iou_thr": IOU,
            "seconds": {
                "fuse_boxes_given_proficiency": fuse_times,
                "fuse_boxes_default": default_times,
                "estimate_proficiency": est_times,
                "ensemble_boxes_loop": ens_times,
                "scored_fuse_boxes_given_proficiency": scored_times,
                "scored_ensemble_boxes_loop": scored_ens_times,
                "ensemble_input_preparation": prep_seconds,
                "agreement": agreement_seconds,
            },
            "speedup_median": speedup,
            "speedup_min": speedup_best,
            "n_images_with_boxes": len(jobs),
            "comparison": cmp,
            "speedup_scored_median": speedup_scored,
            "comparison_scored": cmp_scored,
            "proficiency": weight,
            "per_class": per_class.to_dict(orient="records"),
            "per_reader": per_reader.to_dict(orient="records"),
            "pairwise_f1": {r: pairwise.loc[r].to_dict() for r in pairwise.index},
            "shared_images": {r: shared_images.loc[r].to_dict() for r in shared_images.index},
            "machine": machine_line(),
        },
    )


if __name__ == "__main__":
    main()
