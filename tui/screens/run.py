"""Placeholder: replaced by the screen's implementation."""

from textual.screen import Screen


class RunScreen(Screen):
    pass
