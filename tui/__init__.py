"""The Textual terminal UI (see issue 3); never imports torch, transformers, peft or datasets."""
