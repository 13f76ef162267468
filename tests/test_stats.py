"""alexnet_kernels.stats against numbers worked out by hand from the paper's and torchvision's
layer definitions (not from the code under test).

Receptive-field arithmetic used below, per layer of kernel k, stride s, padding p:
    r = r_in + (k - 1) * j_in,   j = j_in * s,   p_eff = p_in + p * j_in,   from (1, 1, 0) at the image;
    output size = (n + 2p - k) // s + 1.
"""
import subprocess
import sys

import pytest

from alexnet_kernels import stats
from alexnet_kernels.stats import InputSizeError, group_totals, layer_table, receptive_field


@pytest.fixture(scope="module")
def paper():
    return {r.name: r for r in layer_table("paper")}


@pytest.fixture(scope="module")
def tv():
    return {r.name: r for r in layer_table("torchvision")}


def test_row_order():
    assert [r.name for r in layer_table("paper")] == [
        "conv1", "lrn1", "pool1", "conv2", "lrn2", "pool2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7", "fc8"]
    # at 224 torchvision's AdaptiveAvgPool2d((6, 6)) gets 6x6 and changes nothing: no row
    assert [r.name for r in layer_table("torchvision")] == [
        "conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7", "fc8"]


def test_paper_shapes_and_receptive_fields(paper):
    # (name, in size, out size, RF, jump, effective padding)
    expected = [
        ("conv1", 227, 55, 11, 4, 0),     # (227 - 11) // 4 + 1 = 55; r = 1 + 10 * 1; j = 4
        ("lrn1", 55, 55, 11, 4, 0),       # pointwise in space: nothing changes
        ("pool1", 55, 27, 19, 8, 0),      # (55 - 3) // 2 + 1 = 27; r = 11 + 2 * 4; j = 8
        ("conv2", 27, 27, 51, 8, 16),     # (27 + 4 - 5) + 1 = 27; r = 19 + 4 * 8; p = 0 + 2 * 8
        ("lrn2", 27, 27, 51, 8, 16),
        ("pool2", 27, 13, 67, 16, 16),    # (27 - 3) // 2 + 1 = 13; r = 51 + 2 * 8; j = 16
        ("conv3", 13, 13, 99, 16, 32),    # r = 67 + 2 * 16; p = 16 + 1 * 16
        ("conv4", 13, 13, 131, 16, 48),   # r = 99 + 32
        ("conv5", 13, 13, 163, 16, 64),   # r = 131 + 32
        ("pool5", 13, 6, 195, 32, 64),    # (13 - 3) // 2 + 1 = 6; r = 163 + 2 * 16; j = 32
        ("fc6", None, None, 355, 32, 64),  # a 6x6 convolution over pool5: r = 195 + 5 * 32
    ]
    for name, n_in, n_out, rf, jump, pad in expected:
        r = paper[name]
        assert (r.in_size, r.out_size, r.rf_size, r.rf_jump, r.rf_padding) == (n_in, n_out, rf, jump, pad), name


def test_paper_channels_towers_and_geometry(paper):
    c1, c2, c3, p5, fc6, fc8 = (paper[n] for n in ("conv1", "conv2", "conv3", "pool5", "fc6", "fc8"))
    assert (c1.towers, c1.in_channels, c1.filters, c1.kernel, c1.stride, c1.padding) == (2, 3, 96, 11, 4, 0)
    # conv2: each tower reads its own 48 of conv1's 96 channels; conv3 reads all 256
    assert (c2.in_channels, c2.in_channels_per_tower, c2.filters, c2.kernel, c2.padding) == (96, 48, 256, 5, 2)
    assert (c3.in_channels, c3.in_channels_per_tower, c3.filters, c3.kernel) == (256, 256, 384, 3)
    assert (p5.out_channels, p5.kernel, p5.stride) == (256, 3, 2)
    assert (fc6.in_channels, fc6.filters, fc6.towers) == (256 * 6 * 6, 4096, 2)
    assert (fc8.in_channels, fc8.filters, fc8.towers) == (4096, 1000, 1)  # fc8 is outside the towers


def test_paper_params(paper):
    assert paper["conv1"].params == 96 * 3 * 11 * 11 + 96 == 34_944
    assert paper["conv2"].params == 256 * 48 * 5 * 5 + 256 == 307_456  # a filter sees 48 channels
    assert paper["conv3"].params == 384 * 256 * 3 * 3 + 384 == 885_120  # ... all 256
    assert paper["conv4"].params == 384 * 192 * 3 * 3 + 384 == 663_936
    assert paper["conv5"].params == 256 * 192 * 3 * 3 + 256 == 442_624
    assert paper["fc6"].params == 9216 * 4096 + 4096 == 37_752_832
    assert paper["fc7"].params == 4096 * 4096 + 4096 == 16_781_312
    assert paper["fc8"].params == 4096 * 1000 + 1000 == 4_097_000
    assert paper["lrn1"].params == paper["pool5"].params == 0
    assert sum(r.params for r in paper.values()) == 60_965_224


def test_paper_flops_and_memory(paper):
    # 2 FLOPs per multiply-add; conv1: 55 * 55 outputs x 96 filters x (3 * 11 * 11 = 363) inputs
    assert paper["conv1"].flops == 2 * 55 * 55 * 96 * 363 == 210_830_400
    assert paper["conv2"].flops == 2 * 27 * 27 * 256 * (48 * 25) == 447_897_600  # tower-local: 48 channels
    assert paper["conv3"].flops == 2 * 13 * 13 * 384 * (256 * 9) == 299_040_768
    assert paper["conv5"].flops == 2 * 13 * 13 * 256 * (192 * 9) == 149_520_384
    assert paper["fc6"].flops == 2 * 9216 * 4096
    assert paper["pool1"].flops == paper["lrn2"].flops == 0
    assert paper["conv1"].activations == 96 * 55 * 55 == 290_400
    assert paper["conv1"].activation_bytes == 4 * 290_400
    assert paper["pool5"].activations == 256 * 6 * 6
    assert paper["fc8"].activations == 1000


def test_torchvision_rows(tv):
    c1, c2, c3, p5, fc6 = (tv[n] for n in ("conv1", "conv2", "conv3", "pool5", "fc6"))
    # conv1: (224 + 2*2 - 11) // 4 + 1 = 55; p_eff = 2
    assert (c1.out_size, c1.padding, c1.rf_size, c1.rf_jump, c1.rf_padding) == (55, 2, 11, 4, 2)
    assert c1.params == 64 * 3 * 121 + 64 == 23_296
    assert c1.flops == 2 * 55 * 55 * 64 * 363
    # conv2: 64 -> 192, 5x5, full connectivity; p_eff = 2 + 2 * 8
    assert (c2.in_channels, c2.filters, c2.towers, c2.rf_size, c2.rf_padding) == (64, 192, 1, 51, 18)
    assert c2.params == 192 * 64 * 25 + 192 == 307_392
    assert c2.flops == 2 * 27 * 27 * 192 * 64 * 25 == 447_897_600
    assert c3.params == 384 * 192 * 9 + 384
    assert (p5.out_size, p5.rf_size, p5.rf_jump, p5.rf_padding) == (6, 195, 32, 2 + 16 + 3 * 16)
    assert fc6.params == 9216 * 4096 + 4096
    assert sum(r.params for r in tv.values()) == 61_100_840


def test_group_totals_add_up():
    for variant in ("paper", "torchvision"):
        rows = layer_table(variant)
        *groups, total = group_totals(rows)
        assert [g.name for g in groups] == ["early convs", "later convs", "fc layers"]
        assert total.name == "total"
        for field in ("activations", "params", "flops"):
            assert sum(getattr(g, field) for g in groups) == getattr(total, field) == sum(
                getattr(r, field) for r in rows)
        assert groups[0].layers[-1] == "pool2" and groups[1].layers == ("conv3", "conv4", "conv5", "pool5")
    paper_groups = group_totals(layer_table("paper"))
    # the fc layers hold most parameters and the convolutions most FLOPs
    assert paper_groups[2].params == 37_752_832 + 16_781_312 + 4_097_000
    assert paper_groups[2].params / paper_groups[3].params > 0.95


def test_receptive_field_function():
    assert receptive_field("paper", "conv1") == (11, 4, 0)
    assert receptive_field("paper", "conv5") == (163, 16, -64)
    assert receptive_field("torchvision", "conv1") == (11, 4, -2)
    rf = receptive_field("torchvision", "conv1", 64)
    # unit (0, 0) sees [-2, 9), unit (1, 2) [2, 13) x [6, 17)
    assert rf.window(0, 0) == (-2, -2, 9, 9)
    assert rf.window(1, 2) == (2, 6, 13, 17)
    with pytest.raises(ValueError, match="conv9"):
        receptive_field("paper", "conv9")


def test_torchvision_other_sizes():
    # 63 (the minimum): conv1 (63 + 4 - 11) // 4 + 1 = 15, pool1 7, conv2 7, pool2 3, pool5 1;
    # avgpool turns 1x1 into 6x6 (copies): a row, with no regular stride
    rows = {r.name: r for r in layer_table("torchvision", 63)}
    assert [rows[n].out_size for n in ("conv1", "pool1", "conv2", "pool2", "conv5", "pool5", "avgpool")] == [
        15, 7, 7, 3, 3, 1, 6]
    assert (rows["avgpool"].kernel, rows["avgpool"].stride, rows["avgpool"].rf_jump) == (1, None, None)
    assert rows["fc6"].rf_size == rows["pool5"].rf_size == 195  # one pool5 unit: fc6 sees just it
    assert rows["fc6"].params == 9216 * 4096 + 4096
    # 415: conv1 (415 + 4 - 11) // 4 + 1 = 103, pool1 51, pool2 25, pool5 12; avgpool 12 -> 6 is a
    # regular 2x2/2 pooling: r = 195 + 32 = 227, j = 64; fc6 over its 6x6: 227 + 5 * 64 = 547
    rows = {r.name: r for r in layer_table("torchvision", 415)}
    assert rows["pool5"].out_size == 12
    a = rows["avgpool"]
    assert (a.kernel, a.stride, a.padding, a.rf_size, a.rf_jump) == (2, 2, 0, 227, 64)
    assert rows["fc6"].rf_size == 547


def test_errors():
    with pytest.raises(ValueError, match="variant"):
        layer_table("resnet")
    with pytest.raises(InputSizeError, match="227"):
        layer_table("paper", 224)
    with pytest.raises(InputSizeError, match="63"):
        layer_table("torchvision", 62)
    with pytest.raises(InputSizeError, match="positive int"):
        layer_table("torchvision", 0)
    with pytest.raises(InputSizeError):
        layer_table("torchvision", 224.0)


def test_cli_table(capsys):
    assert stats.main([]) == 0
    out = capsys.readouterr().out
    for name in ("conv1", "lrn1", "pool1", "conv2", "lrn2", "pool2", "conv3", "conv4", "conv5", "pool5",
                 "fc6", "fc7", "fc8", "early convs", "later convs", "fc layers", "total"):
        assert name in out, name
    assert "60,965,224" in out and "210,830,400" in out and "2x48" in out
    assert stats.main(["--variant", "torchvision", "--input-size", "63"]) == 0
    out = capsys.readouterr().out
    assert "avgpool" in out and "61,100,840" in out and "lrn" not in out


@pytest.mark.parametrize("argv, message", [
    (["--input-size", "200"], "--input-size 200: the paper variant takes 227x227"),
    (["--variant", "torchvision", "--input-size", "40"], "at least 63"),
    (["--variant", "vgg"], "invalid choice"),
    (["--input-size", "big"], "invalid int"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--variant"], "expected one argument"),
])
def test_cli_errors(capsys, argv, message):
    try:
        status = stats.main(argv)
    except SystemExit as e:  # argparse's own errors
        status = e.code
    err = capsys.readouterr().err
    assert status == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_runs_as_module():
    done = subprocess.run([sys.executable, "-m", "alexnet_kernels.stats", "--variant", "torchvision"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "fc8" in done.stdout and "identity" in done.stdout
