"""Tests of kale_jax.metrics.inception: the FID Inception in Flax, its .npz loader and the converter.

The network at 299 x 299 compiles in about 30 s on 2 CPU cores, so every forward pass here uses one
compiled function (module fixture) on one input shape. When torch is importable, the same
architecture is built in torch below (written here from pytorch-fid's description: torchvision's
Inception v3 blocks with the FID patches), given random weights, saved as a .pth, converted by
experiments.convert_inception, and both networks must give the same features.
"""
import os
import pickle

import numpy as np
import pytest

from kale_jax.errors import DataError
from kale_jax.metrics import inception

SHAPE = (2, 32, 32, 3)  # the one input shape of this module: two CIFAR-sized images


@pytest.fixture(scope="module")
def extractor():
    return inception.FeatureExtractor(inception.random_variables(seed=0), batch_size=SHAPE[0])


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(-1, 1, size=SHAPE).astype(np.float32)


def test_feature_shapes_with_random_weights(extractor, images):
    features = extractor(images)
    assert features.shape == (2, inception.FEATURE_DIM) and features.dtype == np.float32
    assert np.all(np.isfinite(features)) and np.all(features >= 0)  # means of ReLU outputs
    assert not np.allclose(features[0], features[1])  # depends on the image
    # Three images: one full batch and one padded batch give the same per-image features.
    three = extractor(np.concatenate([images, images[:1]]))
    np.testing.assert_allclose(three, np.concatenate([features, features[:1]]), rtol=1e-5,
                               atol=1e-5)
    assert inception.expected_shapes()["params/Mixed_7c/branch_pool/conv/kernel"] == \
        (1, 1, 2048, 192)


def test_npz_round_trip_and_one_line_errors(tmp_path):
    flat = inception.flatten_variables(inception.random_variables(seed=1))
    path = str(tmp_path / "weights.npz")
    inception.save_variables(path, flat)
    loaded = inception.flatten_variables(inception.load_variables(path))
    assert set(loaded) == set(flat)
    np.testing.assert_array_equal(np.asarray(loaded["params/Conv2d_1a_3x3/conv/kernel"]),
                                  flat["params/Conv2d_1a_3x3/conv/kernel"])

    def error(path):
        with pytest.raises(DataError) as info:
            inception.load_variables(path)
        assert "\n" not in str(info.value)
        return str(info.value)

    assert "convert_inception" in error(str(tmp_path / "missing.npz"))
    pickled = str(tmp_path / "weights.pkl")
    with open(pickled, "wb") as f:
        pickle.dump({"params": 1}, f)
    assert "pickled files are refused" in error(pickled)
    wrong = dict(flat)
    wrong["params/Mixed_5b/branch1x1/conv/kernel"] = np.zeros((1, 1, 192, 63), np.float32)
    np.savez(str(tmp_path / "wrong.npz"), **wrong)
    assert "Mixed_5b/branch1x1/conv/kernel has shape (1, 1, 192, 63)" in error(
        str(tmp_path / "wrong.npz"))
    del wrong["params/Mixed_5b/branch1x1/conv/kernel"]
    np.savez(str(tmp_path / "short.npz"), **wrong)
    assert "lacks 1 Inception variable" in error(str(tmp_path / "short.npz"))
    np.save(str(tmp_path / "single.npy"), np.zeros(3))
    assert "single .npy" in error(str(tmp_path / "single.npy"))


def test_torch_state_dict_mapping_rejects_foreign_entries():
    with pytest.raises(DataError, match="unexpected entry 'layer1.0.conv1.weight'"):
        inception.from_torch_state_dict({"layer1.0.conv1.weight": np.zeros((1, 1, 1, 1))})


# ----------------------------------------------------------------- torch reference architecture
def _torch_reference():
    """FID Inception in torch: torchvision's Inception v3 blocks with pytorch-fid's patches."""
    torch = pytest.importorskip("torch")
    nn, F = torch.nn, torch.nn.functional

    class BasicConv2d(nn.Module):
        def __init__(self, cin, cout, **kw):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
            self.bn = nn.BatchNorm2d(cout, eps=0.001)

        def forward(self, x):
            return F.relu(self.bn(self.conv(x)))

    def avg(x):  # TF average pooling: padded zeros do not count
        return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)

    class A(nn.Module):
        def __init__(self, cin, pool_features):
            super().__init__()
            self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
            self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
            self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
            self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
            self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
            self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
            self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

        def forward(self, x):
            return torch.cat([
                self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                self.branch_pool(avg(x))], 1)

    class B(nn.Module):
        def __init__(self, cin):
            super().__init__()
            self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
            self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
            self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
            self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

        def forward(self, x):
            return torch.cat([
                self.branch3x3(x),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                F.max_pool2d(x, kernel_size=3, stride=2)], 1)

    class C(nn.Module):
        def __init__(self, cin, c7):
            super().__init__()
            self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
            self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
            self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
            self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
            self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
            self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
            self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

        def forward(self, x):
            b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            bd = x
            for i in range(1, 6):
                bd = getattr(self, f"branch7x7dbl_{i}")(bd)
            return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(avg(x))], 1)

    class D(nn.Module):
        def __init__(self, cin):
            super().__init__()
            self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
            self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
            self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
            self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
            self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

        def forward(self, x):
            b7 = x
            for i in range(1, 5):
                b7 = getattr(self, f"branch7x7x3_{i}")(b7)
            return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7,
                              F.max_pool2d(x, kernel_size=3, stride=2)], 1)

    class E(nn.Module):
        def __init__(self, cin, use_max):
            super().__init__()
            self.use_max = use_max
            self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
            self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
            self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
            self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
            self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
            self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
            self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
            self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
            self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

        def forward(self, x):
            b3 = self.branch3x3_1(x)
            b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
            bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
            pooled = (F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.use_max
                      else avg(x))
            return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)

    class FIDInception(nn.Module):
        def __init__(self):
            super().__init__()
            self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
            self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
            self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
            self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
            self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
            self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = A(192, 32), A(256, 64), A(288, 64)
            self.Mixed_6a = B(288)
            self.Mixed_6b, self.Mixed_6c = C(768, 128), C(768, 160)
            self.Mixed_6d, self.Mixed_6e = C(768, 160), C(768, 192)
            self.Mixed_7a = D(768)
            self.Mixed_7b, self.Mixed_7c = E(1280, False), E(2048, True)
            self.fc = nn.Linear(2048, 1008)  # in the weights file; not used by FID

        def forward(self, x01):  # pytorch-fid's input convention: [0, 1]
            x = F.interpolate(x01, size=(299, 299), mode="bilinear", align_corners=False)
            x = 2 * x - 1
            x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
            x = F.max_pool2d(x, kernel_size=3, stride=2)
            x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
            x = F.max_pool2d(x, kernel_size=3, stride=2)
            for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
                x = getattr(self, f"Mixed_{name}")(x)
            return F.adaptive_avg_pool2d(x, 1).flatten(1)

    return torch, FIDInception


def test_converted_torch_weights_give_the_same_features(extractor, images, tmp_path):
    torch, FIDInception = _torch_reference()
    from experiments import convert_inception  # pylint: disable=g-import-not-at-top
    torch.manual_seed(0)
    model = FIDInception().eval()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("conv.weight"):
                fan_in = tensor[0].numel()
                tensor.copy_(torch.randn_like(tensor) * (2.0 / fan_in) ** 0.5)
            elif name.endswith(("bn.weight", "running_var")):
                tensor.copy_(torch.rand_like(tensor) + 0.5)
            elif tensor.is_floating_point():
                tensor.copy_(torch.randn_like(tensor) * 0.1)
    pth = str(tmp_path / "random_inception.pth")
    torch.save(model.state_dict(), pth)  # includes fc.* and bn num_batches_tracked
    npz = str(tmp_path / "random_inception.npz")
    assert convert_inception.convert(pth, npz) == len(inception.expected_shapes())

    with torch.no_grad():
        expected = model(torch.from_numpy((images.transpose(0, 3, 1, 2) + 1) / 2)).numpy()
    flax_features = inception.FeatureExtractor(inception.load_variables(npz),
                                               batch_size=SHAPE[0])(images)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(flax_features, expected, rtol=1e-3, atol=1e-4 * scale)

    with pytest.raises(DataError, match="weights_only=True"):  # a pickled object is refused
        with open(str(tmp_path / "code.pth"), "wb") as f:
            pickle.dump(os.getcwd, f)
        convert_inception.convert(str(tmp_path / "code.pth"), npz)
