"""Placeholder: replaced by the screen's implementation."""

from textual.screen import Screen


class RegistryScreen(Screen):
    pass
