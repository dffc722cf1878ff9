"""A yes/no question in a modal screen (uninstall a plugin, stop a run)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Footer, Static


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question: ``y`` answers yes, ``n`` or esc no.

    Args:
        question: the question (a ``str`` is shown as it is, without markup).
    """

    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Static {
        width: 72; height: auto; border: round $warning; background: $panel; padding: 0 1;
        border-subtitle-color: $text-muted;
    }
    """

    def __init__(self, question: str | Text) -> None:
        super().__init__()
        self.question = Text(question) if isinstance(question, str) else question

    def compose(self) -> ComposeResult:
        question = Static(self.question, id="question")
        question.border_subtitle = "y: yes · n: no"
        yield question
        yield Footer(compact=True)

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
