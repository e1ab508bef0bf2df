"""The progress bar: on stderr, only when stderr is a terminal and the run takes over ~1 s."""

from __future__ import annotations

import io

import pytest

from funnelsim import cli


class Terminal(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.fixture
def clock(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(cli.time, "monotonic", lambda: now[0])
    return now


@pytest.mark.parametrize("tty", [True, False])
def test_the_bar_shows_on_a_terminal_after_a_second(monkeypatch, clock, tty):
    stderr = Terminal(tty)
    monkeypatch.setattr(cli.sys, "stderr", stderr)
    with cli._Progress() as bar:
        clock[0] += 0.5
        bar.update(10, 100)
        assert stderr.getvalue() == ""  # a quick start shows nothing
        clock[0] += 1.0
        bar.update(40, 100)
        bar.update(100, 100)
    shown = stderr.getvalue()
    if tty:
        assert "simulating" in shown and "100%" in shown
    else:
        assert shown == ""


def test_a_run_done_within_a_second_shows_no_bar(monkeypatch, clock):
    stderr = Terminal(True)
    monkeypatch.setattr(cli.sys, "stderr", stderr)
    with cli._Progress() as bar:
        clock[0] += 0.3
        bar.update(100, 100)
    assert stderr.getvalue() == ""
