"""ultralytics under kiln: no colour codes or bar redraws in a log file; layer table and args only with --verbose."""

import logging

import projects.yolo.offline  # noqa: F401  (before ultralytics)
from projects.yolo import console


def test_a_log_file_gets_no_colour_codes_and_one_line_per_bar():
    import ultralytics.utils.tqdm as ultralytics_tqdm
    from ultralytics.utils import colorstr

    original = ultralytics_tqdm.is_noninteractive_console
    try:
        console.configure(tty=False)
        assert ultralytics_tqdm.is_noninteractive_console() is True
        message = colorstr("train: ") + "Scanning labels"
        assert "\x1b[" in message
        record = logging.LogRecord("ultralytics", logging.INFO, __file__, 1, message, None, None)
        assert logging.getLogger("ultralytics").filter(record)  # ultralytics' handler sees it after the filters
        assert record.getMessage() == "train: Scanning labels"
        import io

        out = io.StringIO()
        with ultralytics_tqdm.TQDM(range(3), desc=colorstr("train: ") + "Scanning", file=out) as bar:
            for _ in bar:
                pass
        assert "\x1b[" not in out.getvalue() and "train: Scanning" in out.getvalue()
        assert out.getvalue().count("\r") <= 1  # one finished line, no redraws
        console.configure(tty=True)  # a terminal keeps ultralytics' colours
        assert not any(isinstance(f, console.StripAnsi) for f in logging.getLogger("ultralytics").filters)
    finally:
        ultralytics_tqdm.is_noninteractive_console = original


def test_quiet_hides_info_lines_and_restores_the_level():
    logger = logging.getLogger("ultralytics")
    before = logger.level
    with console.quiet(True):
        assert not logger.isEnabledFor(logging.INFO)
    assert logger.level == before
    with console.quiet(False):
        assert logger.level == before


def test_the_layer_table_needs_verbose():
    from projects.yolo.train import KilnDetectionTrainer

    assert KilnDetectionTrainer.show_layers is False
    assert console.layer_table(False, True) is False and console.layer_table(True, True) is True
