"""Progress off a terminal is whole lines, never carriage-return frames."""

from __future__ import annotations

import io

from models.progress import LineProgress, progress


def test_off_a_terminal_progress_is_plain_lines_with_the_final_count():
    out = io.StringIO()  # not a terminal
    assert list(progress(range(5), desc="replay", unit="ev", file=out)) == [0, 1, 2, 3, 4]
    text = out.getvalue()
    assert "\r" not in text
    assert text.splitlines()[-1].startswith("replay: 5/5 ev (100%)")


def test_lines_come_at_the_interval_and_updates_by_count():
    out = io.StringIO()
    with LineProgress(None, desc="features", unit="tx", total=10, file=out, interval_s=0.0) as bar:
        bar.update(4)
        bar.update(6)
    assert [line.split(",")[0] for line in out.getvalue().splitlines()] == [
        "features: 4/10 tx (40%)", "features: 10/10 tx (100%)"]


def test_a_disabled_progress_writes_nothing():
    out = io.StringIO()
    bar = progress(total=3, desc="x", unit="y", enabled=False, file=out)
    bar.update(3)
    bar.close()
    assert out.getvalue() == ""
