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
