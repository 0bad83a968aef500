"""Progress bars (solo_qscore._progress): drawn on a terminal, quiet under CI."""

from __future__ import annotations

import io

from helpers.terminal import FakeTerminal


def test_progress_bar_on_a_terminal_and_quiet_under_ci(monkeypatch):
    from solo_qscore._progress import progress, progress_disabled

    monkeypatch.delenv("CI", raising=False)
    assert progress_disabled() is None
    stream = FakeTerminal()
    assert list(progress(range(3), desc="work", delay=0, file=stream)) == [0, 1, 2]
    assert "work" in stream.getvalue()
    for value in ("true", "1"):
        monkeypatch.setenv("CI", value)
        assert progress_disabled() is True
        stream = FakeTerminal()
        assert list(progress(range(3), desc="work", delay=0, file=stream)) == [0, 1, 2]
        assert stream.getvalue() == ""
    monkeypatch.setenv("CI", "false")
    assert progress_disabled() is None
    stream = io.StringIO()  # not a terminal: quiet
    monkeypatch.delenv("CI")
    list(progress(range(3), desc="work", delay=0, file=stream))
    assert stream.getvalue() == ""
