from projects.common.plots import save_loss_curve


def test_loss_curve_has_both_losses_and_extra_axis():
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "val_iou": e / 10} for e in (1, 2, 3)]
    fig = save_loss_curve(history, extra=("val_iou",))
    labels = [line.get_label() for ax in fig.axes for line in ax.get_lines()]
    assert labels == ["train_loss", "val_loss", "val_iou"]


def test_every_series_has_its_own_colour_whole_epochs_and_the_metric_its_own_axis():
    history = [{"epoch": float(e), "train_loss": 1 / e, "val_loss": 1.2 / e, "val_iou": e / 10} for e in range(1, 8)]
    fig = save_loss_curve(history, extra=("val_iou",))
    loss_ax, metric_ax = fig.axes
    colours = [line.get_color() for ax in fig.axes for line in ax.get_lines()]
    assert len(set(colours)) == 3
    assert [line.get_label() for line in metric_ax.get_lines()] == ["val_iou"] and metric_ax.get_ylabel() == "val_iou"
    fig.canvas.draw()
    ticks = [t for t in loss_ax.get_xticks() if 1 <= t <= 7]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert {t.get_text() for t in loss_ax.get_legend().get_texts()} == {"train_loss", "val_loss", "val_iou"}


def test_overlays_are_labelled_and_large_enough_to_see():
    import numpy as np

    from projects.common.plots import MIN_TILE, overlay_rows

    image = np.full((64, 64), 90, np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 10:30] = 1
    picture = overlay_rows([(image, mask, mask), (np.dstack([image] * 3), mask, np.zeros_like(mask))])
    tile = MIN_TILE  # 64 px tiles are scaled 4x
    assert picture.dtype == np.uint8 and picture.shape[2] == 3
    assert picture.shape[1] == 3 * tile + 2 * 4 and picture.shape[0] > 2 * tile
    band = picture[:28]
    assert (band < 128).any(), "the label band holds the words input | target | prediction"
    first_row = picture[28 : 28 + tile]
    assert first_row[:, tile + 4 : 2 * tile + 4].max() == 255  # the target mask is white on black
