"""Crowd annotations as features: predicting melanoma from crowd ABC scores (ISIC 2017).

After Cheplygina & Pluim, "Crowd disagreement about medical images is informative" (LABELS @
MICCAI 2018, https://doi.org/10.1007/978-3-030-01364-6_12): predict whether a skin lesion is
a melanoma from non-experts' scores of its asymmetry, border and colour, using

* (i) the mean over the annotators of every feature,
* (ii) one annotator's scores alone (each annotator slot in turn; mean ± sd over slots),
* (iii) the mean plus the annotators' disagreement (standard deviation per feature),
* and the disagreement alone (standard deviation per feature),

all built with :func:`crowdmed.quality.crowd_features`. Cross-validated ROC AUC, stratified
5-fold, repeated with several seeds, for a logistic regression (standardised features) and a
random forest (scikit-learn, a benchmark dependency).

Data: ``$CROWDMED_DATA/enhance_isic_crowd`` (``CROWDMED_DATA`` defaults to
``<repo>/../shared/data``), loaded with :func:`crowdmed.data.load_isic_crowd`:

* ``crowd``: 1,250 ISIC 2017 training images scored by 3 MTurk workers (answer slots
  ``i, ii, iii``, not persons);
* ``student``: the 2017-2018 student groups that scored asymmetry, border and colour
  (6 of 8 groups, 100 images each; groups 3 and 8 used other colour/border items). Each group
  used its own scales, so scores are turned into within-group percentile ranks first. The
  single-annotator set takes, per image, the k-th student's score (students ordered by id).

Usage::

    python benchmarks/isic_crowd_features.py [--seeds 10] [--trees 200] [--quick]
        [--markdown PATH] [--json PATH]

Writes the ``isic_crowd_features`` section of ``BENCHMARKS.md`` and
``benchmarks/results/isic_crowd_features.json`` (atomically); ``--quick`` (2 seeds, 50 trees)
only prints.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import REPO, machine_line, update_section, write_json
from crowdmed.data import IsicCrowd, load_isic_crowd
from crowdmed.quality import crowd_features

DATASET = "enhance_isic_crowd"
FEATURES = ("asymmetry", "border", "color")
N_FOLDS = 5
N_SLOTS = 3
STUDENT_GROUPS = (1, 2, 4, 5, 6, 7)  # the 2017-2018 groups with asymmetry, border and colour


def _folder() -> Path:
    root = Path(os.environ.get("CROWDMED_DATA", REPO.parent / "shared" / "data"))
    folder = root / DATASET
    if not folder.is_dir():
        raise SystemExit(
            f"ENHANCE data not found at {folder}. Set CROWDMED_DATA to the folder that holds "
            f"'{DATASET}/' (default <repo>/../shared/data)."
        )
    return folder


def _per_annotator(data: IsicCrowd) -> pd.DataFrame:
    wide = data.per_annotator(FEATURES)
    if data.source == "student":
        keep = [f"{y}/group{g:02d}" for y in ("2017-2018",) for g in STUDENT_GROUPS]
        wide = wide[wide["group"].isin(keep)].copy()
        # groups used their own scales: within-group percentile ranks (ties share a rank)
        for f in FEATURES:
            wide[f] = wide.groupby("group")[f].rank(pct=True)
    return wide


def feature_sets(wide: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per-image design matrices: mean, std, mean+std, and one per annotator slot."""
    feats = crowd_features(
        wide, item="image_id", annotator="annotator", features=list(FEATURES),
        stats=("mean", "std", "count"),
    )  # fmt: skip
    mean_cols = [f"{f}_mean" for f in FEATURES]
    std_cols = [f"{f}_std" for f in FEATURES]
    sets = {
        "mean": feats[mean_cols],
        "std (disagreement only)": feats[std_cols],
        "mean + std": feats[mean_cols + std_cols],
    }
    # slot k = the k-th annotator (by id) of each image; for MTurk the answer slots i, ii, iii
    ordered = wide.sort_values(["image_id", "annotator"])
    ordered = ordered.assign(slot=ordered.groupby("image_id").cumcount())
    for k in range(N_SLOTS):
        one = ordered[ordered["slot"] == k].set_index("image_id")[list(FEATURES)]
        sets[f"single annotator {k + 1}"] = one.reindex(feats.index)
    sets["_count"] = feats[[f"{f}_count" for f in FEATURES]]
    return sets


def _models(trees: int) -> dict[str, Any]:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return {
        "logistic regression": lambda seed: make_pipeline(
            SimpleImputer(strategy="median"), StandardScaler(), LogisticRegression(max_iter=1000)
        ),
        "random forest": lambda seed: make_pipeline(
            SimpleImputer(strategy="median"),
            RandomForestClassifier(
                n_estimators=trees, min_samples_leaf=5, random_state=seed, n_jobs=1
            ),
        ),
    }


def cv_auc(x: np.ndarray, y: np.ndarray, make: Any, seeds: int) -> list[float]:
    """Mean AUC over the 5 folds of each repeat (one value per seed)."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    out = []
    for seed in range(seeds):
        folds = StratifiedKFold(N_FOLDS, shuffle=True, random_state=seed)
        aucs = []
        for train, test in folds.split(x, y):
            model = make(seed).fit(x[train], y[train])
            aucs.append(roc_auc_score(y[test], model.predict_proba(x[test])[:, 1]))
        out.append(float(np.mean(aucs)))
    return out


def run(seeds: int, trees: int) -> dict[str, Any]:
    folder = _folder()
    models = _models(trees)
    res: dict[str, Any] = {"sources": {}}
    for source in ("crowd", "student"):
        t0 = time.perf_counter()
        data = load_isic_crowd(folder, source=source)
        wide = _per_annotator(data)
        sets = feature_sets(wide)
        counts = sets.pop("_count")
        y = data.diagnosis.loc[counts.index, "melanoma"].to_numpy()
        src: dict[str, Any] = {
            "n_images": len(y),
            "n_melanoma": int(y.sum()),
            "n_annotators": int(wide["annotator"].nunique()),
            "groups": sorted(wide["group"].unique().tolist()),
            "scores_per_image": {
                f: [int(counts[f"{f}_count"].min()), int(counts[f"{f}_count"].max())]
                for f in FEATURES
            },
            "results": {},
        }
        # univariate: how each column alone separates melanoma (AUC of the raw value)
        from sklearn.metrics import roc_auc_score

        uni = {}
        for name in ("mean", "std (disagreement only)"):
            for col in sets[name].columns:
                v = sets[name][col].to_numpy()
                ok = ~np.isnan(v)
                uni[col] = float(roc_auc_score(y[ok], v[ok]))
        src["univariate_auc"] = uni
        for model_name, make in models.items():
            per_set = {}
            for set_name, frame in sets.items():
                per_set[set_name] = cv_auc(frame.to_numpy(dtype=float), y, make, seeds)
            src["results"][model_name] = per_set
        src["seconds"] = time.perf_counter() - t0
        res["sources"][source] = src
    return res


def _ms(values: list[float]) -> str:
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.3f} ± {a.std(ddof=1):.3f}" if len(a) > 1 else f"{a[0]:.3f}"


def markdown(res: dict[str, Any], seeds: int, trees: int) -> str:
    crowd = res["sources"]["crowd"]
    student = res["sources"]["student"]
    lines = [
        "## Crowd annotations as features: melanoma from ABC scores (`isic_crowd_features`)",
        "",
        "After Cheplygina & Pluim (LABELS 2018), on the ENHANCE data (`enhance_isic_crowd`, "
        "Raumanns et al. 2021): predict melanoma vs not (ISIC 2017 ground truth) from "
        "non-experts' asymmetry, border and colour scores, turned into per-image features "
        "with `crowdmed.quality.crowd_features`. Cross-validated ROC AUC, stratified "
        f"{N_FOLDS}-fold, repeated with {seeds} seeds (0..{seeds - 1}); each entry is the mean "
        f"± sd over the {seeds} repeats of the {N_FOLDS}-fold mean AUC. Logistic regression on "
        "standardised features; random forest with "
        f"{trees} trees, `min_samples_leaf=5` (scikit-learn {_sk_version()}); missing values "
        "(an image with < 2 scores has no standard deviation) are imputed with the training "
        f"median. Script: `python benchmarks/isic_crowd_features.py --seeds {seeds} --trees "
        f"{trees}` ({crowd['seconds'] + student['seconds']:.0f} s). {machine_line()}.",
        "",
        f"* **MTurk crowd**: {crowd['n_images']:,} images ({crowd['n_melanoma']} melanoma), "
        "3 answers per image (slots i, ii, iii; worker identity is not in the data, so "
        "'single annotator k' is the k-th slot, not one person).",
        f"* **Students 2017-2018**: {student['n_images']} images ({student['n_melanoma']} "
        f"melanoma) of the {len(student['groups'])} groups that scored all three features "
        f"(groups {', '.join(g.split('group')[1] for g in student['groups'])}), "
        f"{student['n_annotators']} students, "
        f"{min(v[0] for v in student['scores_per_image'].values())}-"
        f"{max(v[1] for v in student['scores_per_image'].values())} scores per image and "
        "feature. Each group chose its own scale, so scores are within-group percentile ranks; "
        "'single annotator k' is the k-th student (by id) who scored the image.",
        "",
        "| features | MTurk, logistic | MTurk, forest | students, logistic | students, forest |",
        "|---|---:|---:|---:|---:|",
    ]
    order = ["mean", "single annotator (mean ± sd over 3)", "mean + std", "std (disagreement only)"]
    for name in order:
        cells = []
        for src in (crowd, student):
            for model in ("logistic regression", "random forest"):
                r = src["results"][model]
                if name.startswith("single"):
                    means = [float(np.mean(r[f"single annotator {k + 1}"])) for k in range(N_SLOTS)]
                    cells.append(_ms(means))
                else:
                    cells.append(_ms(r[name]))
        label = {
            "mean": "(i) mean of annotators",
            "single annotator (mean ± sd over 3)": "(ii) one annotator (mean ± sd over 3 slots)",
            "mean + std": "(iii) mean + disagreement (sd)",
            "std (disagreement only)": "disagreement (sd) only",
        }[name]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    pairs = [
        (src, model)
        for src in (crowd, student)
        for model in ("logistic regression", "random forest")
    ]
    gain_single = [
        np.mean(src["results"][m]["mean"])
        - np.mean([np.mean(src["results"][m][f"single annotator {k + 1}"]) for k in range(N_SLOTS)])
        for src, m in pairs
    ]
    gain_std = [
        np.mean(src["results"][m]["mean + std"]) - np.mean(src["results"][m]["mean"])
        for src, m in pairs
    ]
    sd_only = [np.mean(src["results"][m]["std (disagreement only)"]) for src, m in pairs]
    lines += [
        "",
        "Reading: the mean of the annotators beats the average single annotator in "
        f"{sum(g > 0 for g in gain_single)} of the 4 columns (differences "
        f"{min(gain_single):+.3f} to {max(gain_single):+.3f} AUC). Adding the "
        f"disagreement to the mean changes the AUC by {min(gain_std):+.3f} to "
        f"{max(gain_std):+.3f}, so it adds little or nothing here. The disagreement alone "
        f"reaches AUC {min(sd_only):.3f} to {max(sd_only):.3f}: weakly informative at best.",
        "",
        "Single annotators one by one (AUC, mean over repeats): "
        + "; ".join(
            f"{src_name} {_short(model)} "
            + ", ".join(
                f"{np.mean(src['results'][model][f'single annotator {k + 1}']):.3f}"
                for k in range(N_SLOTS)
            )
            for src_name, src in (("MTurk", crowd), ("students", student))
            for model in ("logistic regression", "random forest")
        )
        + ".",
        "",
        "Paired difference (iii) − (i) over the repeats (same folds): "
        + "; ".join(
            f"{src_name} {_short(model)} "
            + _ms(
                list(
                    np.subtract(src["results"][model]["mean + std"], src["results"][model]["mean"])
                )
            )
            for src_name, src in (("MTurk", crowd), ("students", student))
            for model in ("logistic regression", "random forest")
        )
        + ".",
        "",
        "AUC of each feature column alone (no model; > 0.5 means higher values go with "
        "melanoma): "
        + "; ".join(
            f"{src_name}: " + ", ".join(f"{k} {v:.3f}" for k, v in src["univariate_auc"].items())
            for src_name, src in (("MTurk", crowd), ("students", student))
        )
        + ".",
        "",
        "The paper's own AUCs are not given in the data README, so none are shown side by side; "
        "its abstract (arXiv 1806.08174) states that the mean annotations perform best and "
        "that the disagreement measures are still informative. The README does not say which "
        "annotator set (MTurk or students) the paper used, and the paper's exact protocol "
        "(classifier, folds) is not reproduced here; compare the ordering of the rows, not the "
        "values.",
    ]
    return "\n".join(lines)


def _short(model: str) -> str:
    return {"logistic regression": "logistic", "random forest": "forest"}[model]


def _sk_version() -> str:
    import sklearn

    return str(sklearn.__version__)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10, help="CV repeats (seeds 0..n-1)")
    ap.add_argument("--trees", type=int, default=200, help="random-forest trees")
    ap.add_argument("--quick", action="store_true", help="2 seeds, 50 trees, print only")
    ap.add_argument("--markdown", default=None, help="markdown file (default BENCHMARKS.md)")
    ap.add_argument("--json", default=None, help="raw results file")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.trees = 2, 50
    md_path = args.markdown or (None if args.quick else "BENCHMARKS.md")
    json_path = args.json or (None if args.quick else "benchmarks/results/isic_crowd_features.json")
    res = run(args.seeds, args.trees)
    md = markdown(res, args.seeds, args.trees)
    print(md)
    res.update(seeds=args.seeds, trees=args.trees, folds=N_FOLDS, machine=machine_line())
    if md_path:
        update_section("isic_crowd_features", md, md_path)
    if json_path:
        write_json(json_path, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
