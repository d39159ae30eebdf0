"""Layer tables shared by the benchmarks: one row drives every kernel and every peer.

Each entry: name -> (C, H, W, K, kernel, stride, padding, groups), NCHW input (1 image).
"""

RESNET50 = {
    "r50_stem_7x7s2_3-64@224": (3, 224, 224, 64, 7, 2, 3, 1),
    "r50_3x3_64@56": (64, 56, 56, 64, 3, 1, 1, 1),
    "r50_3x3_128@28": (128, 28, 28, 128, 3, 1, 1, 1),
    "r50_3x3_256@14": (256, 14, 14, 256, 3, 1, 1, 1),
    "r50_3x3_512@7": (512, 7, 7, 512, 3, 1, 1, 1),
    "r50_1x1_256-64@56": (256, 56, 56, 64, 1, 1, 0, 1),
    "r50_1x1_1024-256@14": (1024, 14, 14, 256, 1, 1, 0, 1),
}

MOBILENETV2 = {
    "mv2_dw3x3_144@56": (144, 56, 56, 144, 3, 1, 1, 144),
    "mv2_dw3x3s2_192@28": (192, 28, 28, 192, 3, 2, 1, 192),
    "mv2_dw3x3_384@14": (384, 14, 14, 384, 3, 1, 1, 384),
    "mv2_dw3x3_960@7": (960, 7, 7, 960, 3, 1, 1, 960),
    "mv2_pw1x1_144-24@56": (144, 56, 56, 24, 1, 1, 0, 1),
}

# the rest of ResNet-50's 1x1 shapes (not in the issue's layer set; `--layers` names them)
RESNET50_POINTWISE = {
    "r50_1x1_64-64@56": (64, 56, 56, 64, 1, 1, 0, 1),
    "r50_1x1_64-256@56": (64, 56, 56, 256, 1, 1, 0, 1),
    "r50_1x1_128-512@28": (128, 28, 28, 512, 1, 1, 0, 1),
    "r50_1x1_512-128@28": (512, 28, 28, 128, 1, 1, 0, 1),
    "r50_1x1_256-1024@14": (256, 14, 14, 1024, 1, 1, 0, 1),
    "r50_1x1_512-2048@7": (512, 7, 7, 2048, 1, 1, 0, 1),
    "r50_1x1_2048-512@7": (2048, 7, 7, 512, 1, 1, 0, 1),
}

# MobileNetV2's last 1x1 (320 -> 1280 on 7x7: its weights stream from L3 at batch 1)
MOBILENETV2_POINTWISE = {
    "mv2_pw1x1_320-1280@7": (320, 7, 7, 1280, 1, 1, 0, 1),
}

LAYERS = {**RESNET50, **MOBILENETV2}
ALL_LAYERS = {**LAYERS, **RESNET50_POINTWISE, **MOBILENETV2_POINTWISE}


def flops(spec, batch):
    """2 * MACs of the layer (direct-equivalent count)."""
    c, h, w, k, r, s, p, g = spec
    oh = (h + 2 * p - r) // s + 1
    ow = (w + 2 * p - r) // s + 1
    return 2 * batch * k * (c // g) * r * r * oh * ow
