"""The Textual terminal UI (see issue 3); never imports the training libraries (torch and the
Hugging Face stack: tests/test_tui_imports.py checks)."""
