"""The terminal run asks for an action's inputs: a number within bounds, or none."""

from __future__ import annotations

import io

from rich.console import Console

from orchestra.cli.run import TerminalRun
from orchestra.domain.models import ActionInput

TIMEOUT = ActionInput(name="timeout_s", label="Timeout (seconds)", minimum=1, maximum=600)


class Scripted(TerminalRun):
    """A terminal run whose person answers from a list."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.screen = io.StringIO()
        self.out = Console(file=self.screen, width=100)

    def _ask(self, prompt: str) -> str:
        self.out.print(prompt)
        return self.answers.pop(0)


def test_a_number_within_bounds_is_taken_after_refusing_others() -> None:
    run = Scripted(["soon", "0", "601", "inf", "90"])
    assert run._number(TIMEOUT) == 90.0
    assert run.screen.getvalue().count("Answer with a number between 1 and 600") == 4
    assert run.answers == []


def test_enter_gives_no_input() -> None:
    run = Scripted([""])
    assert run._number(TIMEOUT) is None


def test_bounds_in_words() -> None:
    assert TIMEOUT.bounds() == "between 1 and 600"
    assert ActionInput(name="n", label="n", minimum=2).bounds() == "at least 2"
    assert ActionInput(name="n", label="n", maximum=3.5).bounds() == "at most 3.5"
    assert ActionInput(name="n", label="n").bounds() == "any number"
    assert not ActionInput(name="n", label="n").accepts(float("nan"))
