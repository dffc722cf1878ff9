"""The README's plugin example works as written (guards docs drift)."""

from __future__ import annotations

import re
import types
from pathlib import Path

from tuneyard.core.components import EvalContext, Example
from tuneyard.core.plugins import Plugins

README = Path(__file__).parents[1] / "README.md"


def test_readme_evaluator_plugin_registers_and_evaluates():
    [code] = [block for block in re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
              if "register_evaluators" in block]
    module = types.ModuleType("readme_plugin")
    exec(compile(code, "README.md", "exec"), module.__dict__)
    plugins = Plugins()
    plugins.register_plugin(module, "readme-plugin")
    plugins.collect_components()
    info = plugins.get("evaluator", "answer-length")
    assert (info.plugin, plugins.infos["readme-plugin"].errors) == ("readme-plugin", [])
    evaluator = info.cls(info.cls.Options(limit=2))
    ctx = EvalContext(model=None, tokenizer=None, examples=[
        Example("q", "abcd"), Example("q", "ab"), Example("q", "abcdefgh")],
        eval_dataset=[], collator=None, device="cpu")
    assert evaluator.evaluate(ctx).metrics == {"answer_chars": 3.0}
