"""retrievalkit.normalization: one L2 normalisation for the whole package."""
import numpy as np
import pytest
import torch

from retrievalkit.normalization import L2N, l2n


def test_l2n_divides_by_the_norm_by_hand():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [1e-3, 0.0]])
    np.testing.assert_array_equal(l2n(x), [[0.6, 0.8], [0.0, 0.0], [1.0, 0.0]])  # short vectors stay exact
    t = l2n(torch.tensor([[3.0, 4.0], [0.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(t, torch.tensor([[0.6, 0.8], [0.0, 0.0]], dtype=torch.float64), rtol=0, atol=0)
    # along another axis; cirtorch's x / (||x|| + 1e-6) is shorter by a relative 1e-6 / ||x||
    np.testing.assert_allclose(l2n(np.array([[3.0], [4.0]]), dim=0), [[0.6], [0.8]])
    v = np.array([3.0, 4.0])
    np.testing.assert_allclose(np.linalg.norm(v / (5 + 1e-6)), 1 - 1e-6 / 5, rtol=1e-12)
    assert np.linalg.norm(l2n(v)) == pytest.approx(1.0, abs=1e-15)


def test_l2n_layer_keeps_gradients_and_rejects_bad_input():
    x = torch.tensor([[3.0, 4.0]], requires_grad=True)
    out = L2N()(x)
    out[0, 0].backward()  # d(x0/||x||)/dx = (||x||^2 - x0^2, -x0 x1) / ||x||^3
    torch.testing.assert_close(x.grad, torch.tensor([[16.0, -12.0]]) / 125)
    assert repr(L2N()) == "L2N(dim=-1, eps=1e-12)"
    with pytest.raises(ValueError, match="x must be a torch.Tensor or numpy.ndarray"):
        l2n([3.0, 4.0])
    with pytest.raises(ValueError, match="eps must be a positive"):
        l2n(np.ones(2), eps=0)
