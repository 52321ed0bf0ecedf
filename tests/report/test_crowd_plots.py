import numpy as np
import pandas as pd
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

from crowdmed.report.crowd import plot_spammer_scores  # noqa: E402


def test_plot_spammer_scores_draws_one_point_per_annotator():
    import matplotlib.pyplot as plt

    ann = pd.DataFrame(
        {
            "quiz_accuracy": [0.9, 0.5, 0.8, np.nan],
            "spammer_score": [0.6, 0.01, 0.4, 0.2],
            "kind": ["honest", "spammer", "honest", "honest"],
        }
    )
    fig, ax = plot_spammer_scores(ann)
    n = sum(len(c.get_offsets()) for c in ax.collections)
    assert n == 4
    assert "Pearson" in ax.get_title()
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"honest", "spammer"}
    plt.close(fig)
    with pytest.raises(ValueError, match="'est_spammer_score'"):
        plot_spammer_scores(ann, score="est_spammer_score")
