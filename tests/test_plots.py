"""architecture_figure: both networks drawn with the shapes of the model at hand, not of a fixed table."""

from __future__ import annotations

import pytest

from koala import losses
from koala.architectures import build_colorizer
from koala.config import ColorizerConfig
from koala.plots import architecture_figure, save_figure


def texts_of(figure) -> str:
    return "\n".join(text.get_text() for text in figure.axes[0].texts)


def arrows_of(figure) -> list[str]:
    """The arrows' labels: "label: start -> end" ("arrow: ..." for unlabelled ones)."""
    from matplotlib.patches import FancyArrowPatch

    return [patch.get_label() for patch in figure.axes[0].patches if isinstance(patch, FancyArrowPatch)]


@pytest.mark.parametrize("size", [64, 128])
def test_koalarization_figure_shows_the_models_shapes(size, tmp_path):
    model = build_colorizer(ColorizerConfig(image_size=size, embedder_weights=""))
    figure = architecture_figure(model, embedder="inception-resnet-v2")
    texts = texts_of(figure)
    side = size // 8
    for shape in (f"{size} × {size} × 1", f"→ {side} × {side} × 256", f"→ {side} × {side} × 1256",
                  f"{side} × {side} × 1000", f"{size} × {size} × 2\n(a*, b*)"):
        assert shape in texts, shape
    assert "frozen inception-resnet-v2" in texts
    assert f"koalarization) at {size} px: {model.count_params() / 1e6:.1f} M parameters" in figure.axes[0].get_title()
    assert "arrow: repeat -> fusion" in arrows_of(figure)
    save_figure(figure, tmp_path / "architecture.png")
    assert (tmp_path / "architecture.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_koalarization_without_fusion_has_no_embedding_and_shows_class_scores():
    model = build_colorizer(ColorizerConfig(image_size=64, fusion=False, loss="classification", embedder_weights=""))
    figure = architecture_figure(model)
    texts = texts_of(figure)
    assert "embedding" not in texts and "fusion" not in texts
    assert f"32 × 32 × {len(losses.in_gamut_bins())}\nab class scores" in texts
    assert "arrow: encoder -> decoder" in arrows_of(figure)


@pytest.fixture(scope="module")
def lite0_unet_96():
    # 96 px: shapes (24, 12, 6, 3) that no drawing of the 256-px network could contain by accident
    return build_colorizer(ColorizerConfig(architecture="lite0-unet", image_size=96, embedder_weights="",
                                           encoder_weights=""))


def test_lite0_unet_figure_shows_stages_skips_fusion_and_decoder(lite0_unet_96, tmp_path):
    figure = architecture_figure(lite0_unet_96, embedder="efficientnet-lite0")
    texts = texts_of(figure)
    expected = [
        "96 × 96 × 1",
        "Lite0 stem + stages 1-2\n1/4 of the side\n→ 24 × 24 × 24",
        "Lite0 stage 3\n1/8 of the side\n→ 12 × 12 × 40",
        "Lite0 stages 4-5\n1/16 of the side\n→ 6 × 6 × 112",
        "Lite0 stages 6-7\n1/32 of the side\n→ 3 × 3 × 320",
        "→ 3 × 3 × 1320",  # fusion: 320 + the 1000-d embedding
        "1 × 1 convolution\n→ 3 × 3 × 256",
        "3 × 3 convolution\n→ 6 × 6 × 128",
        "3 × 3 convolution\n→ 12 × 12 × 64",
        "3 × 3 convolution\n→ 24 × 24 × 32",
        "24 × 24 × 2\n(a*, b*)",  # a quarter of the side
        "frozen efficientnet-lite0",
    ]
    for text in expected:
        assert text in texts, text
    arrows = arrows_of(figure)
    skips = sorted(label for label in arrows if label.startswith("skip"))
    assert skips == sorted(f"skip: encoder_{factor} -> decoder_{factor}" for factor in (4, 8, 16))
    assert {"arrow: bottleneck -> fusion", "arrow: embedding -> fusion", "arrow: fusion -> mix"} <= set(arrows)
    encoder = lite0_unet_96.get_layer("lite0_unet_encoder")
    assert f"{encoder.count_params() / 1e6:.1f} M of them frozen" in figure.axes[0].get_title()
    save_figure(figure, tmp_path / "architecture.png")
    assert (tmp_path / "architecture.png").stat().st_size > 10_000


def test_lite0_unet_without_fusion_goes_from_the_bottleneck_to_the_decoder():
    model = build_colorizer(ColorizerConfig(architecture="lite0-unet", image_size=64, fusion=False,
                                            loss="classification", embedder_weights="", encoder_weights=""))
    figure = architecture_figure(model)
    texts = texts_of(figure)
    assert "embedding" not in texts and "fusion" not in texts
    assert "→ 2 × 2 × 320" in texts
    assert f"16 × 16 × {len(losses.in_gamut_bins())}\nab class scores" in texts
    assert "arrow: bottleneck -> mix" in arrows_of(figure)


def test_other_models_are_refused():
    import keras

    inputs = keras.Input(shape=(8, 8, 1), name="lightness")
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3, padding="same")(inputs), name="not_koala")
    with pytest.raises(ValueError, match="not a Koala colouriser"):
        architecture_figure(model)


def write_run(folder, history: str, **config_changes):
    from koala.config import ColorizerConfig

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "history.csv").write_text(history)
    ColorizerConfig(**config_changes).save(folder / "config.json")
    return folder


HISTORY = """epoch,loss,val_loss,seconds,val_colorfulness_ratio
1,0.30,0.40,7.5,0.20
2,0.20,0.35,7.1,0.45
3,0.15,0.33,9.0,0.61
"""


def lines_of(axis) -> dict[str, tuple[list, list]]:
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in axis.lines}


def test_training_curves_show_loss_colourfulness_and_the_fine_tuning_start(tmp_path):
    from koala.plots import training_curves

    run = write_run(tmp_path / "lite", HISTORY, architecture="lite0-unet", fine_tune_after=2, collapse_fraction=0.4)
    loss_axis, colour_axis = training_curves(run).axes
    loss = lines_of(loss_axis)
    assert loss["loss"] == ([1, 2, 3], [0.30, 0.20, 0.15])
    assert loss["val_loss"] == ([1, 2, 3], [0.40, 0.35, 0.33])
    assert loss["stages 6-7 train"][0] == [2.5, 2.5]
    colour = lines_of(colour_axis)
    assert colour["validation predictions"] == ([1, 2, 3], [0.20, 0.45, 0.61])
    assert colour["collapse warning"][1] == [0.4, 0.4]
    assert loss_axis.get_ylabel() == "mean squared error of a*, b*"


def test_training_curves_without_a_second_phase_or_validation(tmp_path):
    from koala.plots import training_curves

    koalarization = write_run(tmp_path / "tutorial", HISTORY, fine_tune_after=2)  # ignored: not lite0-unet
    assert "stages 6-7 train" not in lines_of(training_curves(koalarization).axes[0])
    not_yet = write_run(tmp_path / "early", HISTORY, architecture="lite0-unet", fine_tune_after=3)
    assert "stages 6-7 train" not in lines_of(training_curves(not_yet).axes[0])
    no_validation = write_run(tmp_path / "alone", "epoch,loss,seconds\n1,0.5,3.0\n", loss="classification")
    loss_axis, colour_axis = training_curves(no_validation).axes
    assert list(lines_of(loss_axis)) == ["loss"] and len(colour_axis.lines) == 0
    assert loss_axis.get_ylabel() == "classification loss"
    empty = write_run(tmp_path / "empty", "epoch,loss\n")
    with pytest.raises(ValueError, match="no completed epoch"):
        training_curves(empty)


def test_picture_columns_lay_out_one_column_per_title():
    import numpy as np

    from koala.plots import picture_columns

    pictures = [np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 200, np.uint8)]
    figure = picture_columns([("input", pictures), ("model", pictures), ("truth", pictures)])
    assert len(figure.axes) == 6
    assert [axis.get_title() for axis in figure.axes[:3]] == ["input", "model", "truth"]
    with pytest.raises(ValueError):
        picture_columns([("input", pictures), ("model", pictures[:1])])
