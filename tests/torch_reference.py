"""PyTorch re-expressions used only by the tests, with the originals' state_dict key names.

* `UnetGenerator`, `ResnetGenerator`: the generators of the reference pix2pix
  code (junyanz/pytorch-CycleGAN-and-pix2pix, models/networks.py), module for
  module, so that their `state_dict()` has exactly the keys of a released
  `latest_net_G.pth`.
* `FIDInceptionV3`: the FID Inception-v3 of pytorch-fid (torchvision's
  Inception3 with the FIDInceptionA/C/E blocks), whose `state_dict()` has the
  keys of `pt_inception-2015-12-05-6726825d.pth`.
* `fid_inception_state_dict(seed)`: random weights in that layout, for tests
  that need a weights file (`torch.save` it to a temporary path).

torch is a test-only dependency, and it stays out of the pytest process (with
jaxlib in one process it has crashed the test session): only the child process
of `torch_worker.py` imports this module.
"""

import functools
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------
# The reference pix2pix generators.
# ---------------------------------------------------------------------------


def get_norm_layer(norm_type: str):
    """The reference's norm factory: batch (affine) or instance (no affine, no running stats)."""
    if norm_type == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if norm_type == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    raise ValueError(f"unsupported norm {norm_type!r}")


def _uses_bias(norm_layer) -> bool:
    return norm_layer.func == nn.InstanceNorm2d


class UnetSkipConnectionBlock(nn.Module):
    """The reference's U-Net block: X -> [X, up(submodule(down(X)))]."""

    def __init__(
        self,
        outer_nc,
        inner_nc,
        input_nc=None,
        submodule=None,
        outermost=False,
        innermost=False,
        norm_layer=nn.BatchNorm2d,
        use_dropout=False,
    ):
        super().__init__()
        self.outermost = outermost
        use_bias = _uses_bias(norm_layer)
        if input_nc is None:
            input_nc = outer_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
        downrelu = nn.LeakyReLU(0.2, True)
        downnorm = norm_layer(inner_nc)
        uprelu = nn.ReLU(True)
        upnorm = norm_layer(outer_nc)
        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            model = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(
                inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias
            )
            model = [downrelu, downconv, uprelu, upconv, upnorm]
        else:
            upconv = nn.ConvTranspose2d(
                inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias
            )
            model = [downrelu, downconv, downnorm, submodule, uprelu, upconv, upnorm]
            if use_dropout:
                model.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*model)

    def forward(self, x):
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """The reference's UnetGenerator (unet_256: num_downs 8; unet_128: 7)."""

    def __init__(self, input_nc, output_nc, num_downs, ngf=64, norm="batch", use_dropout=True):
        super().__init__()
        norm_layer = get_norm_layer(norm)
        block = UnetSkipConnectionBlock(
            ngf * 8, ngf * 8, submodule=None, norm_layer=norm_layer, innermost=True
        )
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(
                ngf * 8, ngf * 8, submodule=block, norm_layer=norm_layer, use_dropout=use_dropout
            )
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, submodule=block, norm_layer=norm_layer)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block, norm_layer=norm_layer)
        block = UnetSkipConnectionBlock(ngf, ngf * 2, submodule=block, norm_layer=norm_layer)
        self.model = UnetSkipConnectionBlock(
            output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True,
            norm_layer=norm_layer,
        )  # fmt: skip

    def forward(self, x):
        return self.model(x)


class ResnetBlock(nn.Module):
    """The reference's ResnetBlock with reflection padding."""

    def __init__(self, dim, norm_layer, use_dropout, use_bias):
        super().__init__()
        block = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=use_bias),
            norm_layer(dim),
            nn.ReLU(True),
        ]
        if use_dropout:
            block.append(nn.Dropout(0.5))
        block += [
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=use_bias),
            norm_layer(dim),
        ]
        self.conv_block = nn.Sequential(*block)

    def forward(self, x):
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """The reference's ResnetGenerator (resnet_6blocks / resnet_9blocks)."""

    def __init__(self, input_nc, output_nc, ngf=64, norm="batch", use_dropout=False, n_blocks=6):
        super().__init__()
        norm_layer = get_norm_layer(norm)
        use_bias = _uses_bias(norm_layer)
        model = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=use_bias),
            norm_layer(ngf),
            nn.ReLU(True),
        ]
        for i in range(2):
            mult = 2**i
            model += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=use_bias),
                norm_layer(ngf * mult * 2),
                nn.ReLU(True),
            ]
        for _ in range(n_blocks):
            model.append(ResnetBlock(ngf * 4, norm_layer, use_dropout, use_bias))
        for i in range(2):
            mult = 2 ** (2 - i)
            model += [
                nn.ConvTranspose2d(
                    ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1,
                    bias=use_bias,
                ),
                norm_layer(ngf * mult // 2),
                nn.ReLU(True),
            ]  # fmt: skip
        model += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7), nn.Tanh()]
        self.model = nn.Sequential(*model)

    def forward(self, x):
        return self.model(x)


def randomize(module: nn.Module, seed: int) -> nn.Module:
    """Give every parameter and batch-norm running statistic a random value (not zeros/ones).

    Weights get He-like scales so that deep stacks keep activations of order 1.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim > 1:
                fan_in = p[0].numel()  # Conv2d (out, in, kh, kw) and Linear (out, in)
                if isinstance(_owner(module, name), nn.ConvTranspose2d):
                    fan_in = p.shape[0] * p[0, 0].numel() / 4  # (in, out, kh, kw), stride 2
                p.copy_(torch.randn(p.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
            elif name.endswith("weight"):  # norm scales
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=gen))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen))
            elif name.endswith("num_batches_tracked"):
                b.fill_(1234)
    return module.eval()


def _owner(module: nn.Module, param_name: str) -> nn.Module:
    return module.get_submodule(param_name.rsplit(".", 1)[0])


# ---------------------------------------------------------------------------
# The FID Inception-v3 (pytorch-fid).
# ---------------------------------------------------------------------------


class BasicConv2d(nn.Module):
    """torchvision's conv (no bias) -> BatchNorm(eps=1e-3) -> ReLU."""

    def __init__(self, in_channels, out_channels, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg3(x):
    # TensorFlow's average pool, as pytorch-fid patches it: padded zeros are not counted.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    def __init__(self, c, pool_features):
        super().__init__()
        self.branch1x1 = BasicConv2d(c, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(c, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(c, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(c, pool_features, kernel_size=1)

    def forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg3(x))], 1)


class InceptionB(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.branch3x3 = BasicConv2d(c, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(c, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionC(nn.Module):
    def __init__(self, c, c7):
        super().__init__()
        self.branch1x1 = BasicConv2d(c, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(c, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(c, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(c, 192, kernel_size=1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4):
            d = layer(d)
        d = self.branch7x7dbl_5(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg3(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(c, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(c, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionE(nn.Module):
    """Mixed_7b (`max_pool` False: TF's average pool) and Mixed_7c (`max_pool` True)."""

    def __init__(self, c, max_pool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(c, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(c, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(c, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(c, 192, kernel_size=1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pool = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg3(x)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(pool)], 1)


class FIDInceptionV3(nn.Module):
    """pytorch-fid's FID Inception: images in [-1, 1] (NCHW) -> pool3 features [N, 2048]."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, 128)
        self.Mixed_6c = FIDInceptionC(768, 160)
        self.Mixed_6d = FIDInceptionC(768, 160)
        self.Mixed_6e = FIDInceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280, max_pool=False)
        self.Mixed_7c = FIDInceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)  # in the weights file; unused for FID

    def forward(self, x, resize=True):
        if resize:
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return x.mean(dim=(2, 3))


def fid_inception_state_dict(seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    """Random weights with exactly the keys and shapes of pytorch-fid's FID Inception file.

    Those of torchvision's Inception3(num_classes=1008, aux_logits=False) with
    the FID blocks, batch-norm running statistics and `num_batches_tracked`
    included. `torch.save` the result to get a file that loads like the real one.
    """
    return randomize(FIDInceptionV3(), seed).state_dict()


def calibrate_batch_norm(module: nn.Module, x: "torch.Tensor") -> nn.Module:
    """Set every BatchNorm's running statistics to those of the batch `x` (then eval mode).

    Random running statistics let activations grow through deep residual
    stacks until tanh saturates; calibrated ones keep them of order 1.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.momentum = 1.0
    with torch.no_grad():
        module.train()(x)
    for m in norms:
        m.momentum = 0.1
    return module.eval()


# ---------------------------------------------------------------------------
# FCN-8s as Caffe runs its deploy network (the FCN-score's segmenter).
# ---------------------------------------------------------------------------


class CaffeFCN8s(nn.Module):
    """FCN-8s of voc-fcn8s/net.py (NCHW): VGG-16 with the first conv padded by 100, Caffe's
    ceil-mode 2x2 pools, fc6/fc7, three transposed convolutions without bias and the deploy
    network's crops (5, 9, 31). `width` channels in the first stage (64: the real one);
    `scales` multiply pool4 and pool3 before their score layers (the "at once" variant).
    """

    STAGES = ((2, 1), (2, 2), (3, 4), (3, 8), (3, 8))

    def __init__(self, width: int, num_classes: int = 19):
        super().__init__()
        channels = 3
        for stage, (convs, multiple) in enumerate(self.STAGES, start=1):
            for i in range(1, convs + 1):
                pad = 100 if stage == i == 1 else 1
                conv = nn.Conv2d(channels, width * multiple, 3, padding=pad)
                self.add_module(f"conv{stage}_{i}", conv)
                channels = width * multiple
        fc, n = 64 * width, num_classes
        self.fc6, self.fc7 = nn.Conv2d(channels, fc, 7), nn.Conv2d(fc, fc, 1)
        self.score_fr = nn.Conv2d(fc, n, 1)
        self.score_pool4, self.score_pool3 = nn.Conv2d(8 * width, n, 1), nn.Conv2d(4 * width, n, 1)
        self.upscore2 = nn.ConvTranspose2d(n, n, 4, stride=2, bias=False)
        self.upscore_pool4 = nn.ConvTranspose2d(n, n, 4, stride=2, bias=False)
        self.upscore8 = nn.ConvTranspose2d(n, n, 16, stride=8, bias=False)

    def forward(self, x, scales=(1.0, 1.0)):
        height, width = x.shape[2:]
        pools = []
        for stage, (convs, _) in enumerate(self.STAGES, start=1):
            for i in range(1, convs + 1):
                x = F.relu(getattr(self, f"conv{stage}_{i}")(x))
            x = F.max_pool2d(x, 2, 2, ceil_mode=True)
            pools.append(x)
        x = self.score_fr(F.relu(self.fc7(F.relu(self.fc6(x)))))

        def crop(t, size, offset):
            return t[:, :, offset : offset + size[0], offset : offset + size[1]]

        x = self.upscore2(x)
        x = x + crop(self.score_pool4(pools[3] * scales[0]), x.shape[2:], 5)
        x = self.upscore_pool4(x)
        x = x + crop(self.score_pool3(pools[2] * scales[1]), x.shape[2:], 9)
        return crop(self.upscore8(x), (height, width), 31)


def caffe_fcn8s(width: int, seed: int) -> CaffeFCN8s:
    """A CaffeFCN8s with He-normal random weights and biases, so its scores stay of order 1."""
    net = CaffeFCN8s(width)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                w = module.weight
                fan_in = w.shape[1 if isinstance(module, nn.Conv2d) else 0] * w[0, 0].numel()
                w.copy_(torch.randn(w.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
    return net.eval()


# ---------------------------------------------------------------------------
# Perceptual networks: torchvision's VGG19 / VGG16 / AlexNet layouts, pix2pixHD's VGG loss
# and the lpips package's LPIPS.
# ---------------------------------------------------------------------------


def torchvision_vgg(convs_per_stage, width: int, hidden: int = 16) -> nn.Module:
    """torchvision's VGG without batch norm (`features`, `classifier`), `width` channels first.

    The classifier keeps torchvision's layer indices (0, 3, 6) with `hidden` units.
    """
    layers, channels = [], 3
    for convs, multiple in zip(convs_per_stage, (1, 2, 4, 8, 8), strict=True):
        for _ in range(convs):
            layers += [nn.Conv2d(channels, width * multiple, 3, padding=1), nn.ReLU(inplace=True)]
            channels = width * multiple
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    net = nn.Module()
    net.features = nn.Sequential(*layers)
    net.classifier = nn.Sequential(
        nn.Linear(channels * 7 * 7, hidden), nn.ReLU(True), nn.Dropout(),
        nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(), nn.Linear(hidden, 10),
    )  # fmt: skip
    return net


def torchvision_alexnet(width: int, hidden: int = 16) -> nn.Module:
    """torchvision's AlexNet (`features`, `classifier` 1/4/6), `width` channels first (64)."""
    w = width
    net = nn.Module()
    net.features = nn.Sequential(
        nn.Conv2d(3, w, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(w, 3 * w, kernel_size=5, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(3 * w, 6 * w, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(6 * w, 4 * w, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(4 * w, 4 * w, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )  # fmt: skip
    net.classifier = nn.Sequential(
        nn.Dropout(), nn.Linear(4 * w * 6 * 6, hidden), nn.ReLU(inplace=True),
        nn.Dropout(), nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 10),
    )  # fmt: skip
    return net


def he_randomize(net: nn.Module, seed: int) -> nn.Module:
    """He-normal convolutions and linears, small random biases: activations stay of order 1."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(
                    torch.randn(module.weight.shape, generator=gen) * (2 / fan_in) ** 0.5
                )
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
    return net.eval()


def _slices(features: nn.Sequential, bounds) -> list:
    """pretrained_networks' / pix2pixHD's slices: Sequentials of features[a:b], keys kept."""
    slices = []
    for start, stop in bounds:
        part = nn.Sequential()
        for x in range(start, stop):
            part.add_module(str(x), features[x])
        slices.append(part)
    return slices


class Vgg19(nn.Module):
    """pix2pixHD's Vgg19: relu1_1 ... relu5_1 of torchvision's vgg19 `features`."""

    def __init__(self, features: nn.Sequential):
        super().__init__()
        bounds = ((0, 2), (2, 7), (7, 12), (12, 21), (21, 30))
        for i, part in enumerate(_slices(features, bounds), start=1):
            self.add_module(f"slice{i}", part)

    def forward(self, x):
        h_relu1 = self.slice1(x)
        h_relu2 = self.slice2(h_relu1)
        h_relu3 = self.slice3(h_relu2)
        h_relu4 = self.slice4(h_relu3)
        h_relu5 = self.slice5(h_relu4)
        return [h_relu1, h_relu2, h_relu3, h_relu4, h_relu5]


class VGGLoss(nn.Module):
    """pix2pixHD's VGGLoss (on the CPU): weighted L1 of the five Vgg19 activations."""

    def __init__(self, features: nn.Sequential):
        super().__init__()
        self.vgg = Vgg19(features)
        self.criterion = nn.L1Loss()
        self.weights = [1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0]

    def forward(self, x, y):
        x_vgg, y_vgg = self.vgg(x), self.vgg(y)
        loss = 0
        for i in range(len(x_vgg)):
            loss += self.weights[i] * self.criterion(x_vgg[i], y_vgg[i].detach())
        return loss


def normalize_tensor(in_feat, eps=1e-10):
    """lpips.normalize_tensor."""
    norm_factor = torch.sqrt(torch.sum(in_feat**2, dim=1, keepdim=True))
    return in_feat / (norm_factor + eps)


class ScalingLayer(nn.Module):
    """lpips' ScalingLayer."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.Tensor([-0.030, -0.088, -0.188])[None, :, None, None])
        self.register_buffer("scale", torch.Tensor([0.458, 0.448, 0.450])[None, :, None, None])

    def forward(self, inp):
        return (inp - self.shift) / self.scale


class NetLinLayer(nn.Module):
    """lpips' NetLinLayer: [Dropout,] 1x1 conv to one channel without bias."""

    def __init__(self, chn_in, chn_out=1, use_dropout=False):
        super().__init__()
        layers = [nn.Dropout()] if use_dropout else []
        layers += [nn.Conv2d(chn_in, chn_out, 1, stride=1, padding=0, bias=False)]
        self.model = nn.Sequential(*layers)


LPIPS_SLICES = {
    "alex": ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12)),
    "vgg": ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30)),
}


class LPIPS(nn.Module):
    """lpips.LPIPS (version 0.1, lpips=True, spatial=False) on a given torchvision `features`.

    `lin0` ... `lin4` are the heads (with dropout: keys `lin{i}.model.1.weight`).
    """

    def __init__(self, kind: str, features: nn.Sequential, channels):
        super().__init__()
        self.scaling_layer = ScalingLayer()
        self.slices = _slices(features, LPIPS_SLICES[kind])
        for i, c in enumerate(channels):
            self.add_module(f"lin{i}", NetLinLayer(c, use_dropout=True))
        self.lins = [getattr(self, f"lin{i}") for i in range(len(channels))]

    def net(self, x):
        outs = []
        for part in self.slices:
            x = part(x)
            outs.append(x)
        return outs

    def forward(self, in0, in1):
        outs0, outs1 = self.net(self.scaling_layer(in0)), self.net(self.scaling_layer(in1))
        res = []
        for kk in range(len(self.lins)):
            diff = (normalize_tensor(outs0[kk]) - normalize_tensor(outs1[kk])) ** 2
            res.append(self.lins[kk].model(diff).mean([2, 3], keepdim=True))
        val = res[0]
        for r in res[1:]:
            val += r
        return val


def lpips_heads_state_dict(model: LPIPS) -> "OrderedDict[str, torch.Tensor]":
    """The heads as the released weights/v0.1/*.pth hold them: the lin*.model.1.weight keys."""
    return OrderedDict((k, v) for k, v in model.state_dict().items() if k.startswith("lin"))


# ---------------------------------------------------------------------------
# pix2pixHD (NVIDIA/pix2pixHD, models/networks.py and models/pix2pixHD_model.py).
# ---------------------------------------------------------------------------


class HDNLayerDiscriminator(nn.Module):
    """pix2pixHD's NLayerDiscriminator with getIntermFeat=True: blocks `model0` .. `model<n+1>`.

    As pix2pixHD's, except `padw`: pix2pixHD pads its 4x4 convs by 2
    (ceil((4 - 1) / 2)); the pix2pix PatchGAN that pix2pix_jax's scales are pads
    by 1, which `padw=1` re-expresses. Every conv has a bias (pix2pixHD's
    default), which pix2pix_jax's PatchGAN also has with instance norm.
    """

    def __init__(self, input_nc, ndf=64, n_layers=3, norm="instance", padw=2):
        super().__init__()
        norm_layer = get_norm_layer(norm)
        self.n_layers = n_layers
        kw = 4
        sequence = [[nn.Conv2d(input_nc, ndf, kw, stride=2, padding=padw), nn.LeakyReLU(0.2, True)]]
        nf = ndf
        for _ in range(1, n_layers):
            nf_prev, nf = nf, min(nf * 2, 512)
            sequence += [[nn.Conv2d(nf_prev, nf, kw, stride=2, padding=padw), norm_layer(nf),
                          nn.LeakyReLU(0.2, True)]]  # fmt: skip
        nf_prev, nf = nf, min(nf * 2, 512)
        sequence += [[nn.Conv2d(nf_prev, nf, kw, stride=1, padding=padw), norm_layer(nf),
                      nn.LeakyReLU(0.2, True)]]  # fmt: skip
        sequence += [[nn.Conv2d(nf, 1, kw, stride=1, padding=padw)]]
        for n, block in enumerate(sequence):
            setattr(self, f"model{n}", nn.Sequential(*block))

    def forward(self, x):
        res = [x]
        for n in range(self.n_layers + 2):
            res.append(getattr(self, f"model{n}")(res[-1]))
        return res[1:]


class HDMultiscaleDiscriminator(nn.Module):
    """pix2pixHD's MultiscaleDiscriminator (getIntermFeat=True), its names and scale order.

    `scale<i>_layer<j>` holds block j of the copy that sees the input downsampled
    num_D - 1 - i times (pix2pixHD's numbering); the output lists the full
    resolution first, each scale as [block outputs..., logits].
    """

    def __init__(self, input_nc, ndf=64, n_layers=3, norm="instance", num_D=3, padw=2):
        super().__init__()
        self.num_D, self.n_layers = num_D, n_layers
        for i in range(num_D):
            netD = HDNLayerDiscriminator(input_nc, ndf, n_layers, norm, padw)
            for j in range(n_layers + 2):
                setattr(self, f"scale{i}_layer{j}", getattr(netD, f"model{j}"))
        self.downsample = nn.AvgPool2d(3, stride=2, padding=[1, 1], count_include_pad=False)

    def forward(self, x):
        result, x_down = [], x
        for i in range(self.num_D):
            model = [getattr(self, f"scale{self.num_D - 1 - i}_layer{j}")
                     for j in range(self.n_layers + 2)]  # fmt: skip
            res = [x_down]
            for layer in model:
                res.append(layer(res[-1]))
            result.append(res[1:])
            if i != self.num_D - 1:
                x_down = self.downsample(x_down)
        return result


def hd_gan_loss(pred, target_is_real: bool, use_lsgan: bool):
    """pix2pixHD's GANLoss on a multi-scale output: the sum over scales of the last entries.

    use_lsgan=False is pix2pixHD's sigmoid + BCELoss, here on logits (BCEWithLogits).
    """
    loss = 0
    for pred_i in pred:
        logits = pred_i[-1]
        target = torch.full_like(logits, 1.0 if target_is_real else 0.0)
        if use_lsgan:
            loss += F.mse_loss(logits, target)
        else:
            loss += F.binary_cross_entropy_with_logits(logits, target)
    return loss


def hd_feature_matching(pred_fake, pred_real, n_layers_D: int, num_D: int, lambda_feat: float):
    """pix2pixHD_model.py's loss_G_GAN_Feat."""
    loss = 0
    feat_weights = 4.0 / (n_layers_D + 1)
    D_weights = 1.0 / num_D
    for i in range(num_D):
        for j in range(len(pred_fake[i]) - 1):
            loss += (
                D_weights
                * feat_weights
                * F.l1_loss(pred_fake[i][j], pred_real[i][j].detach())
                * lambda_feat
            )
    return loss
