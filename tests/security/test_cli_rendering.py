"""What an agent or a diff writes reaches the terminal as text (issue 15): a file
named like rich markup, ANSI escapes and carriage returns in a diff, bidi
overrides, markup in a finding or the checks' output never style, link, clear or
rewrite the screen, and never crash the rendering."""

from __future__ import annotations

import io
import re
from pathlib import Path

from rich.console import Console, RenderableType

from orchestra.cli.render import checkpoint_view
from orchestra.domain.code import CheckOutcome, Finding
from orchestra.domain.models import Checkpoint
from tests.unit.test_cli_code_view import code_checkpoint, real_change

MARKUP_NAME = "[bold red]x[/]"
HOSTILE_LINE = (
    "\x1b[2J\x1b[31mred\x1b[0m [link=file:///etc/passwd]click[/link] "
    "done\rOVERWRITTEN \u202eevil\u202c \x07 [/]"
)
#: Rich's own styling: SGR sequences only (ESC [ digits ; … m).
SGR = re.compile(r"\x1b\[[0-9;]*m")


def hostile_checkpoint(tmp_path: Path) -> Checkpoint:
    change = real_change(
        tmp_path,
        {MARKUP_NAME: HOSTILE_LINE + "\n", "ok.py": "print('\x1b]0;title\x07')\n"},
        base={"README": "x\n"},
        findings=[
            Finding(
                agent="[blink]rev[/blink]",
                severity="[red]high",
                title="[/] unbalanced " + HOSTILE_LINE,
                detail="[bold]not bold[/bold]",
                file=MARKUP_NAME,
                line=1,
            ),
            Finding(agent="r", title="\x1b[2Jgeneral"),
        ],
        check=CheckOutcome(
            command=["sh", "-c", "echo [bold]x[/]"],
            exit_code=1,
            passed=False,
            output_tail=HOSTILE_LINE + "\n",
        ),
    )
    return code_checkpoint(change)


def render(renderable: RenderableType, *, colours: bool) -> str:
    out = io.StringIO()
    console = Console(
        file=out,
        width=80,
        force_terminal=colours,
        color_system="truecolor" if colours else None,
        legacy_windows=False,
    )
    console.print(renderable)
    return out.getvalue()


def test_markup_in_names_and_text_prints_literally(tmp_path: Path) -> None:
    text = render(checkpoint_view(hostile_checkpoint(tmp_path)), colours=False)
    flat = text.replace("│", "").replace("\n", "")
    assert MARKUP_NAME in text
    assert "[link=file:///etc/passwd]click[/link]" in flat
    assert "[/] unbalanced" in text
    assert "[bold]not bold[/bold]" in flat
    assert "[blink]rev[/blink]" in flat
    assert "sh -c 'echo [bold]x[/]'" in flat


def test_control_characters_are_written_out_not_sent(tmp_path: Path) -> None:
    cp = hostile_checkpoint(tmp_path)
    plain = render(checkpoint_view(cp), colours=False)
    assert "\x1b" not in plain and "\r" not in plain and "\x07" not in plain
    assert "\u202e" not in plain
    assert "\\x1b[2J\\x1b[31mred" in plain.replace("│", "")
    assert "done\\x0dOVERWRITTEN \\u202eevil" in plain.replace("│", "")
    coloured = render(checkpoint_view(cp), colours=True)
    assert not SGR.sub("", coloured).count("\x1b")  # only rich's own colours reach the screen
    assert "\x1b]8;" not in coloured  # no hyperlink
