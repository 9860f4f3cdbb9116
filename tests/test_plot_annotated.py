"""The annotated small maps of lecture 1: numbers readable on light and dark cells."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from retrievalkit import plot  # noqa: E402


def test_numbers_are_white_on_dark_cells_and_black_on_light_ones():
    fig, ax = plt.subplots()
    plot.annotated_map(ax, [[0.0, 6.0]], title="t")  # "Blues": 0 is near white, the maximum is dark navy
    colours = {t.get_text(): t.get_color() for t in ax.texts}
    plt.close(fig)
    assert colours == {"0": "black", "6": "white"}


def test_a_map_must_be_2d():
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="values"):
        plot.annotated_map(ax, [1.0, 2.0])
    plt.close(fig)


def test_result_grid_frames_a_revisited_ground_truth_by_its_medium_protocol(tmp_path):
    from types import SimpleNamespace

    import numpy as np
    from matplotlib.colors import to_rgba
    from PIL import Image

    paths = []
    for i in range(4):
        paths.append(tmp_path / f"{i}.jpg")
        Image.new("RGB", (8, 8), (60 * i, 0, 0)).save(paths[-1])
    # database 0: easy, 1: hard, 2: junk, 3: neither; Medium counts easy and hard as relevant
    ds = SimpleNamespace(images=paths, gnd=[{"easy": [0], "hard": [1], "junk": [2]}],
                         query_image=lambda q: Image.new("RGB", (8, 8)))
    fig = plot.result_grid(ds, np.array([[3, 2, 1, 0]]), [0], k=4)
    frames = [ax.spines["top"].get_edgecolor() for ax in fig.axes[1:]]
    plt.close(fig)
    assert frames == [to_rgba(c) for c in (plot.BAD_COLOUR, plot.JUNK_COLOUR, plot.OK_COLOUR, plot.OK_COLOUR)]
