from projects.common.plots import save_loss_curve


def test_loss_curve_has_both_losses_and_extra_axis():
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "val_iou": e / 10} for e in (1, 2, 3)]
    fig = save_loss_curve(history, extra=("val_iou",))
    labels = [line.get_label() for ax in fig.axes for line in ax.get_lines()]
    assert labels == ["train_loss", "val_loss", "val_iou"]
