"""Built-in models with deterministic weights (no downloads).

``resnet_tiny`` is a ResNet-18-shaped network with one basic block per stage
(a "ResNet-10"): the 7x7/2 stem, 3x3 blocks at 64/128/256/512 channels with
1x1 strided shortcuts, global average pooling and a linear classifier.  Keys
of ``state_dict()`` follow torchvision's ResNet naming.  ``resnet_tiny_torch``
builds the same network in torch (when installed) for parity tests.
"""
import numpy as np

from . import nn


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), torchvision's BasicBlock."""

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(planes))
        else:
            self.downsample = None

    def fuse(self, enabled=True):
        """Run conv1+bn1+relu and conv2+bn2+residual+relu as two kernel calls (default on)."""
        from .fusion import FusedConv
        steps = (FusedConv(self.conv1, self.bn1, "relu"),
                 FusedConv(self.conv2, self.bn2, "relu")) if enabled else None
        object.__setattr__(self, "_fused", steps)
        if self.downsample is not None:
            self.downsample.fuse(enabled)
        return self

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        if "_fused" not in self.__dict__:
            self.fuse(True)
        if self._fused is not None:
            first, second = self._fused
            return second(first(x), residual=identity)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(np.asarray(out) + np.asarray(identity))


class ResNet(nn.Module):
    """Stem, one BasicBlock per entry of ``widths`` (stride 2 after the first), head."""

    def __init__(self, widths=(64, 128, 256, 512), num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = widths[0]
        for i, w in enumerate(widths):
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(inplanes, w, 1 if i == 0 else 2)))
            inplanes = w
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(inplanes, num_classes)
        self._nstages = len(widths)

    def fuse(self, enabled=True):
        """Fuse the stem (conv1+bn1+relu) and every block; on by default."""
        from .fusion import FusedConv
        object.__setattr__(self, "_stem", FusedConv(self.conv1, self.bn1, "relu") if enabled else None)
        for i in range(self._nstages):
            getattr(self, f"layer{i + 1}").fuse(enabled)
        return self

    def forward(self, x):
        if "_stem" not in self.__dict__:
            self.fuse(True)
        x = self._stem(x) if self._stem is not None else self.relu(self.bn1(self.conv1(x)))
        x = self.maxpool(x)
        for i in range(self._nstages):
            x = getattr(self, f"layer{i + 1}")(x)
        x = self.avgpool(x)
        return self.fc(np.asarray(x).reshape(np.shape(x)[0], -1))


def _deterministic(model, seed):
    """He-style weights and non-trivial BN statistics from a fixed seed."""
    rng = np.random.default_rng(seed)
    sd = model.state_dict()
    new = {}
    for key, v in sd.items():
        if key.endswith("num_batches_tracked"):
            new[key] = v
        elif v.ndim == 4 or (v.ndim == 2 and "fc" in key):
            fan_in = int(np.prod(v.shape[1:]))
            new[key] = (rng.standard_normal(v.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        elif key.endswith("running_var"):
            new[key] = rng.uniform(0.5, 1.5, v.shape).astype(np.float32)
        elif key.endswith("running_mean") or key.endswith("bias"):
            new[key] = (0.1 * rng.standard_normal(v.shape)).astype(np.float32)
        else:  # BN weight
            new[key] = rng.uniform(0.5, 1.0, v.shape).astype(np.float32)
    model.load_state_dict(new)
    return model


def resnet_tiny(widths=(64, 128, 256, 512), num_classes=1000, seed=0):
    """The built-in benchmark model, with deterministic weights."""
    return _deterministic(ResNet(widths, num_classes), seed)


def resnet_tiny_torch(widths=(64, 128, 256, 512), num_classes=1000):
    """The same architecture as a torch.nn.Module (weights left to the caller)."""
    import torch
    tnn = torch.nn

    class TorchBasicBlock(tnn.Module):
        def __init__(self, inplanes, planes, stride=1):
            super().__init__()
            self.conv1 = tnn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(planes)
            self.relu = tnn.ReLU(inplace=True)
            self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(planes)
            self.downsample = None
            if stride != 1 or inplanes != planes:
                self.downsample = tnn.Sequential(tnn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                                 tnn.BatchNorm2d(planes))

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + identity)

    class TorchResNet(tnn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = tnn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
            self.bn1 = tnn.BatchNorm2d(widths[0])
            self.relu = tnn.ReLU(inplace=True)
            self.maxpool = tnn.MaxPool2d(3, 2, 1)
            inplanes = widths[0]
            for i, w in enumerate(widths):
                setattr(self, f"layer{i + 1}",
                        tnn.Sequential(TorchBasicBlock(inplanes, w, 1 if i == 0 else 2)))
                inplanes = w
            self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))
            self.fc = tnn.Linear(inplanes, num_classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            for i in range(len(widths)):
                x = getattr(self, f"layer{i + 1}")(x)
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return TorchResNet()
