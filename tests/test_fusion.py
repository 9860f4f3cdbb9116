"""The fusion steps of Seddati et al. (ICCVW 2017) and multiple feed-forward passes."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from retrievalkit import fusion, multipass, regions


def test_early_fusion_rescales_to_the_largest_map_and_sums():
    big = torch.rand(2, 3, 8, 10, dtype=torch.float64)
    small = torch.rand(2, 3, 4, 5, dtype=torch.float64)
    out = fusion.early_fusion([small, big])
    assert out.shape == big.shape
    # the 4x5 map, upsampled 2x with align_corners=False, lands on a 8x10 grid
    up = F.interpolate(small, size=(8, 10), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, big + up)
    # a constant map stays constant under bilinear resizing: sum of constants
    const = fusion.early_fusion([torch.full((3, 4, 4), 2.0), torch.full((3, 6, 6), 5.0)])
    torch.testing.assert_close(const, torch.full((3, 6, 6), 7.0))


def test_early_and_late_fusion_differ_and_late_is_sum_then_l2():
    a = torch.tensor([[3.0, 0.0]])
    b = torch.tensor([[0.0, 4.0]])
    torch.testing.assert_close(fusion.late_fusion([a, b]), torch.tensor([[0.6, 0.8]]), atol=1e-6, rtol=1e-6)
    # 1x1 maps: every level of os_rmac keeps the one position, so os_rmac(x) = l2n(3 x) = l2n(x)
    x1, x2 = torch.tensor([3.0, 0.0]).view(1, 2, 1, 1), torch.tensor([0.0, 1.0]).view(1, 2, 1, 1)
    early = regions.os_rmac(fusion.early_fusion([x1, x2]))  # l2n([3, 1]): the strong map dominates
    late = fusion.late_fusion([regions.os_rmac(x1), regions.os_rmac(x2)])  # l2n([1, 0] + [0, 1]): equal votes
    torch.testing.assert_close(early, torch.tensor([[3.0, 1.0]]) / 10**0.5)
    torch.testing.assert_close(late, torch.tensor([[1.0, 1.0]]) / 2**0.5)


def test_cam_mask_threshold_is_relative_to_the_mean():
    cam = torch.tensor([[0.0, 1.0], [2.0, 5.0]])  # mean 2: threshold 0.9 * 2 = 1.8
    torch.testing.assert_close(fusion.cam_mask(cam), torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    torch.testing.assert_close(fusion.cam_mask(cam, factor=0.4), torch.tensor([[0.0, 1.0], [1.0, 1.0]]))


def test_local_rmac_pools_only_the_masked_area():
    x = torch.rand(2, 4, 6, 6, dtype=torch.float64)
    cam = torch.zeros(2, 3, 3, dtype=torch.float64)
    cam[:, 0, 0] = 1.0  # top-left CAM cell -> top-left 2x2 of the 6x6 map after nearest resizing
    masked = x.clone()
    masked[:, :, :, 2:] = 0
    masked[:, :, 2:, :] = 0
    torch.testing.assert_close(fusion.local_rmac(x, cam), regions.os_rmac(masked))


def test_fusion_rejects_bad_input():
    with pytest.raises(ValueError, match="maps"):
        fusion.early_fusion([])
    with pytest.raises(ValueError, match="maps must share"):
        fusion.early_fusion([torch.rand(1, 3, 4, 4), torch.rand(1, 2, 4, 4)])
    with pytest.raises(ValueError, match=r"maps\[1\]"):
        fusion.early_fusion([torch.rand(1, 3, 4, 4), torch.rand(4, 4)])
    with pytest.raises(ValueError, match="factor"):
        fusion.cam_mask(torch.rand(3, 3), factor=0)
    with pytest.raises(ValueError, match="cam must"):
        fusion.cam_mask(torch.full((3, 3), float("nan")))
    with pytest.raises(ValueError, match="cam must have one map per image"):
        fusion.local_rmac(torch.rand(2, 3, 4, 4), torch.rand(3, 4, 4))
    with pytest.raises(ValueError, match="vectors"):
        fusion.late_fusion([torch.tensor([[float("nan"), 1.0]])])


def coverage(H, W, boxes):
    cover = np.zeros((H, W), int)
    for x1, y1, x2, y2 in boxes:
        cover[y1:y2, x1:x2] += 1
    return cover


@pytest.mark.parametrize("H, W", [(768, 1024), (7, 10), (100, 100)])
def test_grid_and_pyramid_tile_the_image(H, W):
    grid = regions.patch_boxes(H, W, "grid", n=3)
    assert len(grid) == 9 and (coverage(H, W, grid) == 1).all()  # a partition of the image
    pyramid = regions.patch_boxes(H, W, "pyramid", levels=(1, 2, 3))
    assert len(pyramid) == 1 + 4 + 9 and (coverage(H, W, pyramid) == 3).all()  # one partition per level
    assert pyramid[0] == (0, 0, W, H)


def test_sliding_windows_cover_the_image_with_fixed_size():
    boxes = regions.patch_boxes(768, 1024, "sliding", size=384, stride=192)
    assert {(x2 - x1, y2 - y1) for x1, y1, x2, y2 in boxes} == {(384, 384)}
    # rows start at 0, 192, 384 (ends at 768); columns 0, 192, ..., 576 and 640 (aligned to 1024)
    assert sorted({b[1] for b in boxes}) == [0, 192, 384]
    assert sorted({b[0] for b in boxes}) == [0, 192, 384, 576, 640]
    assert len(boxes) == 15
    # defaults on 10x10: side 5, stride 2 -> starts 0, 2, 4 and 5 (aligned to the border)
    small = regions.patch_boxes(10, 10, "sliding")
    assert sorted({b[0] for b in small}) == [0, 2, 4, 5] and len(small) == 16
    assert (coverage(10, 10, small) >= 1).all()


def test_patch_boxes_rejects_bad_arguments():
    with pytest.raises(ValueError, match="scheme"):
        regions.patch_boxes(10, 10, "random")
    with pytest.raises(ValueError, match="n must"):
        regions.patch_boxes(10, 10, "grid", n=11)
    with pytest.raises(ValueError, match="size must"):
        regions.patch_boxes(10, 10, "sliding", size=11)
    with pytest.raises(ValueError, match="levels"):
        regions.patch_boxes(10, 10, "pyramid", levels=())


def mean_colour(batch):
    return batch.mean(dim=(2, 3))


def test_multi_pass_describes_each_crop_and_aggregates():
    image = torch.rand(3, 12, 16, dtype=torch.float64)
    boxes = regions.patch_boxes(12, 16, "pyramid", levels=(1, 2))
    d = multipass.patch_descriptors(image, boxes, mean_colour, batch_size=2)
    expected = torch.stack([image[:, y1:y2, x1:x2].mean(dim=(1, 2)) for x1, y1, x2, y2 in boxes])
    torch.testing.assert_close(d, expected)
    s = (expected / expected.norm(dim=1, keepdim=True)).sum(0)
    torch.testing.assert_close(multipass.multi_pass(image, boxes, mean_colour), s / s.norm(), rtol=1e-5, atol=1e-6)
    m = expected.amax(0)
    torch.testing.assert_close(multipass.multi_pass(image, boxes, mean_colour, aggregate="max"), m / m.norm(), rtol=1e-5, atol=1e-6)


def test_multi_pass_groups_crops_by_size_into_batches():
    calls = []

    def embed(batch):
        calls.append(tuple(batch.shape))
        return batch.mean(dim=(2, 3))

    image = torch.rand(3, 12, 16)
    boxes = regions.patch_boxes(12, 16, "pyramid", levels=(1, 2))  # one 12x16 crop, four 6x8 crops
    multipass.patch_descriptors(image, boxes, embed, batch_size=16)
    assert sorted(calls) == [(1, 3, 12, 16), (4, 3, 6, 8)]


def test_multi_pass_rejects_bad_input():
    image = torch.rand(3, 12, 16)
    with pytest.raises(ValueError, match="boxes"):
        multipass.patch_descriptors(image, [(0, 0, 17, 5)], mean_colour)
    with pytest.raises(ValueError, match="boxes"):
        multipass.patch_descriptors(image, [], mean_colour)
    with pytest.raises(ValueError, match="image"):
        multipass.patch_descriptors(torch.rand(12, 16), [(0, 0, 4, 4)], mean_colour)
    with pytest.raises(ValueError, match="aggregate"):
        multipass.multi_pass(image, [(0, 0, 4, 4)], mean_colour, aggregate="mean")
    with pytest.raises(ValueError, match="embed"):
        multipass.patch_descriptors(image, [(0, 0, 4, 4)], lambda b: b)


def test_multi_pass_resizes_every_patch_to_the_network_input():
    calls = []

    def embed(batch):
        calls.append(tuple(batch.shape))
        return batch.float().mean(dim=(2, 3))

    # a constant colour stays that colour under any resize, so each patch keeps its colour
    image = torch.zeros(3, 12, 16, dtype=torch.uint8)
    image[:, :, 8:] = 200
    boxes = [(0, 0, 16, 12), (0, 0, 8, 6), (8, 6, 16, 12)]
    d = multipass.patch_descriptors(image, boxes, embed, size=(10, 10))
    assert calls == [(3, 3, 10, 10)]  # three passes at the input size, one batch
    torch.testing.assert_close(d[1:], torch.tensor([[0.0] * 3, [200.0] * 3]))
    with pytest.raises(ValueError, match="size"):
        multipass.patch_descriptors(image, boxes, embed, size=(0, 10))


def test_global_local_distance_keeps_the_nearer_pair_by_hand():
    qg, ql = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]])
    xg = torch.tensor([[0.0, 1.0], [1.0, 1.0], [4.0, 0.0]])
    xl = torch.tensor([[0.0, 0.5], [2.0, 2.0], [0.0, 0.0]])
    # Manhattan: global |1-0|+|0-1| = 2, 1, 3; local 0.5, 4, 0 -> minimum 0.5, 1, 0
    d = fusion.global_local_distance(qg, xg, ql, xl)
    torch.testing.assert_close(d, torch.tensor([[0.5, 1.0, 0.0]]))
    # Euclidean: global sqrt 2, 1, 3; local 0.5, sqrt 8, 0
    torch.testing.assert_close(fusion.global_local_distance(qg, xg, ql, xl, p=2), torch.tensor([[0.5, 1.0, 0.0]]))
    assert torch.argsort(d, dim=1, stable=True).tolist() == [[2, 0, 1]]


def test_global_local_distance_rejects_mismatched_rows():
    a, b = torch.rand(2, 3), torch.rand(4, 3)
    with pytest.raises(ValueError, match="query_local"):
        fusion.global_local_distance(a, b, torch.rand(3, 3), b)
    with pytest.raises(ValueError, match="database_global"):
        fusion.global_local_distance(a, torch.rand(4, 5), a, torch.rand(4, 5))
    with pytest.raises(ValueError, match="p"):
        fusion.global_local_distance(a, b, a, b, p=0)
