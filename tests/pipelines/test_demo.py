import json
import math
import re
import sys
import warnings

import matplotlib
import numpy as np
import pandas as pd
import pytest

import crowdmed
from crowdmed.aggregation import METHODS, make_aggregator
from crowdmed.data.datasets import dataset_info, list_datasets, load_dataset
from crowdmed.pipelines.demo import run_demo
from crowdmed.report import Image, Section, render_html, render_markdown

matplotlib.use("Agg")

ALL_METHODS = [m.value for m in METHODS]
CROWD = [n for n in list_datasets() if not dataset_info(n).medical]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The full demo, run once: every method on every bundled data set."""
    out = tmp_path_factory.mktemp("demo")
    calls = []
    result = run_demo(out, progress=lambda d, c, t: calls.append((d, c, t)), random_state=0)
    return out, result, calls


def _strict_json(path):
    def reject(token):
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=reject)


def test_outputs_exist(demo):
    out, result, _ = demo
    expected = {"results.json", "accuracy.csv", "report.md", "report.html", "lidc_consensus.csv"}
    expected |= {"lidc_masks_nodules.csv", "lidc_masks_readers.csv"}
    expected |= {"mitosis_metrics.csv", "mitosis_annotators.csv", "mitosis_maps.npz"}
    expected |= {"readers_vs_gold.csv", "simulated_ordinal.csv", "simulated_continuous.csv"}
    expected |= {f"annotators_{n}.csv" for n in CROWD}
    assert {p.name for p in out.iterdir()} == expected  # no leftover temporary files
    assert set(result.files) == expected
    assert all(path.stat().st_size > 0 for path in result.files.values())


def test_results_json_records_version_seed_params(demo):
    out, result, _ = demo
    data = _strict_json(out / "results.json")
    assert data["crowdmed_version"] == crowdmed.__version__
    assert data["seed"] == 0
    assert data["params"]["random_state"] == 0
    assert data["params"]["methods"] == ALL_METHODS
    assert data["params"]["datasets"] == list_datasets()
    assert data["params"]["aggregator_params"]["dawid-skene"]["random_state"] == 0
    assert data["timing"]["total_seconds"] > 0
    assert data["timing"]["fit_seconds_total"] <= data["timing"]["total_seconds"]
    assert data["environment"]["numpy"]
    assert len(data["accuracy"]) == len(list_datasets()) * len(ALL_METHODS)
    assert data["summary"] == result.summary
    assert "not stable across scans" in data["lidc"]["caveat"]


def test_accuracy_table_covers_every_dataset_and_method(demo):
    out, result, _ = demo
    acc = result.accuracy
    on_disk = pd.read_csv(out / "accuracy.csv", keep_default_na=False, na_values=[""])
    assert len(on_disk) == len(acc)
    pd.testing.assert_series_equal(on_disk["accuracy"], acc["accuracy"], check_exact=False)
    pairs = set(zip(acc["dataset"], acc["method"], strict=True))
    assert pairs == {(d, m) for d in list_datasets() for m in ALL_METHODS}
    for row in acc.itertuples():
        info = dataset_info(row.dataset)
        binary_only = row.method in ("sens-spec", "kos") and info.n_classes != 2
        if binary_only or (row.method == "gold-majority-vote" and not info.has_gold):
            assert row.status == "skipped"
            assert math.isnan(row.accuracy)
        elif row.method == "gold-majority-vote":  # weights from half the gold, scored on half
            assert row.status == "ok"
            assert 0.0 <= row.accuracy <= 1.0
            assert row.n_gold == info.n_items - info.n_items // 2
            assert "scored on the other" in row.note
        elif info.has_gold:
            assert row.status == "ok"
            assert 0.0 <= row.accuracy <= 1.0
            assert row.n_gold == info.n_items
            assert row.fit_seconds >= 0
        else:
            assert row.status == "no gold"
            assert math.isnan(row.accuracy)


def test_accuracy_values_are_sensible(demo):
    _, result, _ = demo
    acc = result.accuracy.set_index(["dataset", "method"])["accuracy"]
    for name in CROWD:
        # Every method beats chance by far on these data sets.
        assert acc[name].dropna().min() > 0.65
    # Weighted methods help on MS (10 genres, three near-random workers with 300+ labels).
    assert acc["MS", "dawid-skene"] >= acc["MS", "majority-vote"] - 0.01
    assert acc["SP", "dawid-skene"] >= acc["SP", "majority-vote"] - 0.01
    assert acc["MS", "wawa"] > acc["MS", "majority-vote"]
    # Majority vote on MS, with ties broken by the seed (gold known for all 700 clips).
    assert acc["MS", "majority-vote"] == pytest.approx(0.69, abs=0.02)
    # The two-class sens-spec model is the binary Dawid-Skene: same labels on SP.
    assert acc["SP", "sens-spec"] == pytest.approx(acc["SP", "dawid-skene"], abs=0.005)


def test_least_reliable_annotators(demo):
    out, result, _ = demo
    assert set(result.least_reliable) == set(CROWD)
    assert "lidc_malignancy" not in result.annotators  # reader slots are not people
    for name, least in result.least_reliable.items():
        assert 1 <= len(least) <= 5
        assert (least["n_labels"] >= 10).all()
        assert least["spammer_score"].is_monotonic_increasing
        table = pd.read_csv(out / f"annotators_{name}.csv", index_col=0)
        assert len(table) == dataset_info(name).n_annotators
        for col in ("n_labels", "consensus_agreement", "spammer_score", "gold_accuracy"):
            assert col in table.columns
    # The gold-free ranking finds bad annotators: those flagged are less accurate on gold.
    check = result.reliability_check.set_index("dataset")
    assert (check["gold_acc_flagged"] < check["gold_acc_others"]).all()
    assert check.loc["MS", "gold_acc_flagged"] < 0.4


def test_lidc_agreement_and_consensus(demo):
    out, result, _ = demo
    s = result.lidc_summary
    assert s["n_nodules"] == 1866
    assert s["readers_per_nodule"] == {2: 488, 3: 481, 4: 897}
    assert 0.0 < s["share_disagree"] <= 1.0
    assert s["share_spread_ge_2"] < s["share_disagree"]
    agreement = result.lidc_agreement
    assert list(agreement.index) == ["malignancy", "subtlety", "spiculation"]
    # An ordinal scale: near misses count less, so ordinal alpha > nominal alpha.
    assert (agreement["alpha_ordinal"] > agreement["alpha_nominal"]).all()
    assert (agreement[["alpha_ordinal", "alpha_nominal", "fleiss_kappa"]].abs() <= 1).all().all()
    consensus = pd.read_csv(out / "lidc_consensus.csv", index_col="item")
    assert len(consensus) == 1866
    assert consensus["mv"].between(1, 5).all()
    assert consensus["ds"].between(1, 5).all()
    assert consensus["ds_confidence"].between(0.2, 1.0).all()
    assert (consensus["n_readers"] == consensus["ratings"].str.count(";") + 1).all()


def test_report_pages(demo):
    out, result, _ = demo
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    # 4 headline figures, readers vs STAPLE, 3 more nodules, 2 detection maps, the spammer
    # plot, every method's accuracy, 4 binary crowd sets in ROC space and the gold accuracy
    # intervals of 3 multi-class sets
    assert page.count('src="data:image/png;base64,') == 19 == len(result.figures)
    assert "<script" not in page
    assert "http://" not in page  # self-contained: nothing to fetch
    assert "not stable across scans" in page
    for name in list_datasets():
        assert name in page
    md = (out / "report.md").read_text(encoding="utf-8")
    assert md.startswith("# crowdmed demo")
    assert "| method | CF | CF_amt | MS |" in md


def test_summary(demo):
    _, result, _ = demo
    text = result.summary
    assert f"crowdmed {crowdmed.__version__} demo" in text
    assert "LIDC-IDRI malignancy, 1,866 nodules" in text
    assert "slots within a nodule, not people" in text
    for name in CROWD:
        assert name in text
    assert len(text.splitlines()) < 20


def test_progress_callback(demo):
    _, _, calls = demo
    totals = {t for _, _, t in calls}
    assert len(totals) == 1
    total = totals.pop()
    completed = [c for _, c, _ in calls]
    assert completed == sorted(completed)
    assert completed[0] == 0
    assert calls[-1] == ("done", total, total)
    assert any("SP: glad" in d for d, _, _ in calls)


def test_accuracy_csv_matches_a_fit_of_the_library(demo):
    """Every accuracy in accuracy.csv is the one a plain library fit gives with seed 0."""
    out, _, _ = demo
    table = pd.read_csv(out / "accuracy.csv", keep_default_na=False, na_values=[""])
    scored = table[table["status"] == "ok"]
    assert set(scored["dataset"]) == set(CROWD)
    for name, group in scored.groupby("dataset"):
        cl = load_dataset(name)
        known = cl.gold >= 0
        for row in group.itertuples():
            agg = make_aggregator(row.method)
            if "random_state" in agg.get_params():
                agg.set_params(random_state=0)
            scored_items = known
            fit_kw = {}
            if row.method == "gold-majority-vote":  # weights from a seeded half of the gold
                half = np.random.default_rng(0).permutation(np.flatnonzero(known))
                half = half[: half.size // 2]
                fit_kw["gold"] = np.where(np.isin(np.arange(cl.n_items), half), cl.gold, -1)
                scored_items = known & (fit_kw["gold"] < 0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                agg.fit(cl, **fit_kw)
            expected = float(np.mean(agg.labels_[scored_items] == cl.gold[scored_items]))
            assert row.accuracy == pytest.approx(expected, abs=1e-12), (name, row.method)
            assert row.n_gold == int(scored_items.sum())


def test_results_json_and_summary_match_the_csv_files(demo):
    out, result, _ = demo
    data = _strict_json(out / "results.json")
    table = pd.read_csv(out / "accuracy.csv", keep_default_na=False, na_values=[""])
    from_json = pd.DataFrame(data["accuracy"])
    np.testing.assert_allclose(from_json["accuracy"].astype(float), table["accuracy"])
    assert list(from_json["method"]) == list(table["method"])
    # the summary's best method per data set, with MV and DS, as in accuracy.csv
    lines = result.summary.splitlines()
    for name, group in table[table["status"] == "ok"].groupby("dataset", sort=False):
        best = group.loc[group["accuracy"].idxmax()]
        acc = group.set_index("method")["accuracy"]
        line = next(s for s in lines if s.split()[:1] == [name])
        assert line.split() == [
            name,
            best["method"],
            f"{best['accuracy']:.3f}",
            "MV",
            f"{acc['majority-vote']:.3f}",
            "DS",
            f"{acc['dawid-skene']:.3f}",
        ]
    # least reliable annotators: gold accuracy of the flagged ones from the annotator tables
    check = pd.DataFrame(data["reliability_check"]).set_index("dataset")
    for name, least in data["least_reliable"].items():
        table_a = pd.read_csv(out / f"annotators_{name}.csv", dtype=str).set_index("annotator")
        ids = [str(row["annotator"]) for row in least]
        flagged = table_a.loc[ids].astype({"gold_accuracy": float, "spammer_score": float})
        # the listed annotators are the first eligible rows of the ranked table on disk
        eligible = table_a[table_a["eligible"] == "True"]
        assert ids == list(eligible.index[: len(ids)])
        assert flagged["spammer_score"].is_monotonic_increasing
        assert check.loc[name, "gold_acc_flagged"] == pytest.approx(
            flagged["gold_accuracy"].mean(), abs=1e-12
        )


def test_lidc_summary_is_recomputed_from_lidc_consensus_csv(demo):
    out, _, _ = demo
    s = _strict_json(out / "results.json")["lidc"]
    consensus = pd.read_csv(out / "lidc_consensus.csv", index_col="item")
    ratings = consensus["ratings"].str.split(";").apply(lambda r: [int(v) for v in r])
    spread = ratings.apply(lambda r: max(r) - min(r))
    assert (spread == consensus["spread"]).all()
    assert s["readers_per_nodule"] == {
        str(k): int(v) for k, v in ratings.apply(len).value_counts().sort_index().items()
    }
    assert s["share_disagree"] == pytest.approx((spread > 0).mean(), abs=1e-12)
    assert s["share_spread_ge_2"] == pytest.approx((spread >= 2).mean(), abs=1e-12)
    assert s["share_mv_equals_ds"] == pytest.approx(
        (consensus["mv"] == consensus["ds"]).mean(), abs=1e-12
    )
    # the MV consensus is the most frequent rating of each nodule
    for item, r in ratings.items():
        counts = pd.Series(r).value_counts()
        assert consensus.loc[item, "mv"] in counts[counts == counts.max()].index


def test_masks_and_mitosis_summaries_match_their_csv_files(demo):
    out, _, _ = demo
    data = _strict_json(out / "results.json")
    nodules = pd.read_csv(out / "lidc_masks_nodules.csv", index_col="nodule")
    readers = pd.read_csv(out / "lidc_masks_readers.csv")
    m = data["masks"]
    assert m["mean_pairwise_dice_median"] == pytest.approx(
        nodules["mean_pairwise_dice"].median(), abs=1e-12
    )
    assert m["reader_dice_vs_staple_median"] == pytest.approx(
        readers["dice_vs_staple"].median(), abs=1e-12
    )
    assert m["sensitivity_median"] == pytest.approx(readers["sensitivity"].median(), abs=1e-12)
    metrics = pd.read_csv(out / "mitosis_metrics.csv").set_index("model")
    annotators = pd.read_csv(out / "mitosis_annotators.csv")
    x = data["mitosis"]
    assert x["auc_aggnet"] == pytest.approx(metrics.loc["AggNet", "auc"], abs=1e-12)
    assert x["auc_unrefined"] == pytest.approx(metrics.loc["unrefined", "auc"], abs=1e-12)
    assert x["f1_aggnet"] == pytest.approx(metrics.loc["AggNet", "f1"], abs=1e-12)
    by_kind = annotators.groupby("kind")["est_spammer_score"].mean()
    for kind, value in x["est_spammer_score_by_kind"].items():
        assert value == pytest.approx(by_kind[kind], abs=1e-12)


def test_same_seed_same_results(tmp_path):
    kwargs = {
        "datasets": ["MS", "CF"],
        "methods": ["majority-vote", "dawid-skene"],
        "parts": ["crowd"],
    }
    a = run_demo(tmp_path / "a", random_state=3, **kwargs)
    b = run_demo(tmp_path / "b", random_state=3, **kwargs)
    pd.testing.assert_series_equal(a.accuracy["accuracy"], b.accuracy["accuracy"])
    pd.testing.assert_frame_equal(a.annotators["MS"], b.annotators["MS"])
    assert _strict_json(tmp_path / "a" / "results.json")["seed"] == 3


def test_annotator_ranking_without_dawid_skene_in_methods(tmp_path):
    result = run_demo(tmp_path, datasets=["MS"], methods=["majority-vote"], parts=["crowd"])
    assert list(result.accuracy["method"]) == ["majority-vote"]
    assert (tmp_path / "annotators_MS.csv").exists()
    assert result.lidc_consensus.empty
    assert not (tmp_path / "lidc_consensus.csv").exists()


def test_lidc_only_without_mv_or_ds(tmp_path):
    result = run_demo(tmp_path, datasets=["lidc_malignancy"], methods=["one-coin"], parts=["crowd"])
    assert len(result.lidc_consensus) == 1866
    assert result.least_reliable == {}
    assert "Accuracy against gold" not in result.summary


def test_masks_part(demo):
    out, result, _ = demo
    m = _strict_json(out / "results.json")["masks"]
    assert m["n_nodules"] == 100
    assert 0.5 < m["mean_pairwise_dice_median"] < 1  # real readers disagree, but not wildly
    readers = pd.read_csv(out / "lidc_masks_readers.csv")
    assert len(readers) == 400
    assert readers[["sensitivity", "specificity", "dice_vs_staple"]].stack().between(0, 1).all()
    assert (readers["hd95_mm_vs_staple"] >= 0).all()
    nodules = pd.read_csv(out / "lidc_masks_nodules.csv", index_col="nodule")
    assert nodules.index.is_unique
    assert len(nodules) == 100
    assert "STAPLE" in (out / "report.html").read_text(encoding="utf-8")
    assert "LIDC-IDRI nodule masks, 100 nodules" in result.summary


def test_mitosis_part(demo):
    out, result, _ = demo
    m = _strict_json(out / "results.json")["mitosis"]
    assert m["synthetic"] is True
    metrics = pd.read_csv(out / "mitosis_metrics.csv").set_index("model")
    assert {"unrefined", "AM-MV", "AM-GLAD", "AM-GT", "AggNet"} <= set(metrics.index)
    assert metrics[["f1", "auc"]].stack().between(0, 1).all()
    annotators = pd.read_csv(out / "mitosis_annotators.csv")
    spam = annotators.groupby("kind")["est_spammer_score"].mean()
    assert spam["spammer"] < spam["honest"]  # the aggregation layer finds the spammers
    # On this fixed synthetic seed, refinement through the aggregation layer raises the AUC of
    # the 0.33-scale network over the unrefined one (issue: AggNet loop).
    assert m["auc_aggnet"] > m["auc_unrefined"]
    assert m["truth_accuracy_aggnet"] > m["truth_accuracy_mv"]
    with np.load(out / "mitosis_maps.npz") as maps:
        assert len(maps.files) == m["n_test_fields"]
        assert all(maps[k].min() >= 0 and maps[k].max() <= 1 for k in maps.files)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "Mitosis detection and the crowd loop (AggNet, synthetic)" in page
    assert "Synthetic data" in page
    assert "Mitosis crowd loop (synthetic fields, simulated crowd)" in result.summary


def test_mitosis_part_without_torch(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(ImportError, match=r"part 'mitosis' needs PyTorch"):
        run_demo(tmp_path / "explicit", parts=["mitosis"])
    result = run_demo(tmp_path / "default", datasets=["MS"], methods=["majority-vote"])
    assert "mitosis" not in _strict_json(tmp_path / "default" / "results.json")["params"]["parts"]
    assert any("needs PyTorch" in note for note in result.notes)
    assert "needs PyTorch" in (tmp_path / "default" / "report.html").read_text(encoding="utf-8")


def test_masks_part_alone(tmp_path):
    result = run_demo(tmp_path, parts=["masks"])
    assert result.accuracy.empty
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "accuracy.csv",
        "lidc_masks_nodules.csv",
        "lidc_masks_readers.csv",
        "report.html",
        "report.md",
        "results.json",
    ]


def test_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    result = run_demo(
        tmp_path, datasets=["MS"], methods=["majority-vote"], parts=["crowd", "masks"]
    )
    assert result.masks  # the masks part runs without matplotlib, only without its figure
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "data:image/png" not in page
    assert "matplotlib is not installed" in page
    assert "matplotlib is not installed" in result.summary
    assert result.figures == []


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"methods": ["stapel"]}, ValueError, r"`methods` must be one of .*got 'stapel'"),
        ({"methods": ["dawid_skeen"]}, ValueError, r"Did you mean 'dawid-skene'\?"),
        ({"methods": "glad"}, TypeError, r"`methods` must be a list .*Wrap it in a list"),
        ({"methods": []}, ValueError, r"`methods` must name at least one method"),
        ({"datasets": ["MSS"]}, ValueError, r"`name` must be one of .*Did you mean 'MS'\?"),
        ({"datasets": "MS"}, TypeError, r"`datasets` must be a list"),
        ({"random_state": 1.5}, TypeError, r"`random_state` must be an int or None; got float"),
        ({"min_labels": 0}, ValueError, r"`min_labels` must be a positive integer; got 0"),
        ({"progress": "bar"}, TypeError, r"`progress` must be a callable"),
        ({"parts": ["mask"]}, ValueError, r"Unknown demo part 'mask'.*Did you mean 'masks'\?"),
        ({"parts": "masks"}, TypeError, r"`parts` must be a list"),
        ({"parts": []}, ValueError, r"`parts` must name at least one part"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        run_demo(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()  # checked before anything is written


def test_render_html_escapes_everything():
    table = pd.DataFrame(
        {"<b>col</b>": ["<script>alert(1)</script>", "a & b"], "x": [0.5, float("nan")]},
        index=pd.Index(["<i>", '"q"'], name="n<m"),
    )
    page = render_html(
        "T <1>",
        [Section("H & <2>", ["p <tag> & `c<d>`", table])],
        subtitle="<sub>",
    )
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;col&lt;/b&gt;" in page
    assert "<h2>H &amp; &lt;2&gt;</h2>" in page
    assert "<code>c&lt;d&gt;</code>" in page
    assert "&lt;sub&gt;" in page
    assert "&quot;q&quot;" in page
    assert "<td class=num>–</td>" in page
    md = render_markdown("T", [Section("H", [pd.DataFrame({"a": ["x|y"]})])])
    assert "| x\\|y |" in md


def test_render_rejects_bad_blocks():
    with pytest.raises(TypeError, match=r"must be a str, a pandas DataFrame or an Image; got int"):
        render_html("T", [Section("H", [3])])
    with pytest.raises(ValueError, match=r"`Image.png` must hold the bytes of a PNG file"):
        render_html("T", [Section("H", [Image(b"GIF89a", alt="x")])])


def test_report_summary_first_with_this_runs_numbers(demo):
    """The first section says what was run and what it found, in the run's own numbers."""
    out, _, _ = demo
    page = (out / "report.html").read_text(encoding="utf-8")
    data = _strict_json(out / "results.json")
    headings = re.findall(r"<h2>(.*?)</h2>", page)
    assert headings[0] == "Summary"
    # medical data first, the crowd benchmark sets after them
    order = [
        "LIDC-IDRI radiologists: malignancy ratings",
        "LIDC-IDRI radiologists: nodule outlines (STAPLE)",
        "Mitosis detection and the crowd loop (AggNet, synthetic)",
        "Crowd benchmark sets: evidence that the methods are right",
    ]
    assert [h for h in headings if h in order] == order
    summary = page[page.index("<h2>Summary</h2>") : page.index("<h2>", page.index("</h2>"))]
    lidc, masks, mitosis = data["lidc"], data["masks"], data["mitosis"]
    assert f"readers disagree on {lidc['share_disagree']:.0%} of nodules" in summary
    assert f"ordinal alpha is {lidc['alpha_ordinal']:.2f}" in summary
    assert f"median Dice of {masks['reader_dice_vs_staple_median']:.2f}" in summary
    assert f"{mitosis['truth_accuracy_aggnet']:.1%} correct" in summary
    table = pd.read_csv(out / "accuracy.csv", keep_default_na=False, na_values=[""])
    acc = table[table["status"] == "ok"].pivot(index="dataset", columns="method", values="accuracy")
    gain = (acc.max(axis=1) - acc["majority-vote"]) * 100
    assert f"on average {gain.mean():.1f} points above majority vote" in summary
    diff = acc["dawid-skene"] - acc["majority-vote"]
    assert f"above majority vote on {int((diff > 0).sum())} and below" in summary
    assert summary.count("<img ") == 4  # one figure per task
    assert "<details>" in page  # long tables folded
    for href in re.findall(r'<a href="([^"]+)"', page):
        assert (out / href).is_file(), href  # every link points to a file of this run


def test_readers_vs_gold_csv(demo):
    """Annotators and consensus against gold, recomputed from the bundled data."""
    out, _, _ = demo
    table = pd.read_csv(out / "readers_vs_gold.csv", dtype={"annotator": str})
    binary = [n for n in CROWD if dataset_info(n).n_classes == 2]
    assert sorted(table["dataset"].unique()) == sorted(binary)
    sp = table[table["dataset"] == "SP"]
    cl = load_dataset("SP")
    annotators = sp[sp["kind"] == "annotator"].set_index("annotator")
    assert len(annotators) == cl.n_annotators
    first = str(cl.annotator_ids[0])
    mine = cl.annotators == 0
    truth = cl.gold[cl.items[mine]]
    said = cl.labels[mine]
    assert annotators.loc[first, "n_positive"] == (truth == 1).sum()
    assert annotators.loc[first, "sensitivity"] == pytest.approx(
        (said[truth == 1] == 1).mean(), abs=1e-12
    )
    ok = annotators.dropna(subset=["sensitivity_low"])
    assert (ok["sensitivity_low"] <= ok["sensitivity_high"]).all()
    mv = sp[(sp["kind"] == "consensus") & (sp["annotator"] == "majority-vote")].iloc[0]
    agg = make_aggregator("majority-vote", random_state=0).fit(cl)
    known = cl.gold >= 0
    positives = cl.gold[known] == 1
    assert mv["sensitivity"] == pytest.approx((agg.labels_[known][positives] == 1).mean())
