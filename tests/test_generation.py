"""core.generation: batched greedy decoding with left padding."""

from __future__ import annotations

import pytest

PROMPTS = [
    "the cat",
    "define the word tree and tell me what a tall perennial woody plant is",
    "a",
    "<|im_start|>user\nwhat is a dog<|im_end|>\n<|im_start|>assistant\n",
]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    """The tiny Llama with its weights redrawn at a larger scale (std 0.3, seeded), so that
    greedy decoding produces varied tokens instead of repeating the last prompt token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model, tokenizer


def reference_greedy(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    """Greedy decoding by hand: one unpadded prompt, full forward pass per token, no KV cache."""
    import torch

    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    new: list[int] = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            next_id = int(model(input_ids=ids).logits[0, -1].argmax())
            if next_id == tokenizer.eos_token_id:
                break
            new.append(next_id)
            ids = torch.cat([ids, torch.tensor([[next_id]])], dim=1)
    return tokenizer.decode(new, skip_special_tokens=True).strip()


def test_same_outputs_for_every_batch_size(model_and_tokenizer):
    from tuneyard.core.generation import generate

    model, tokenizer = model_and_tokenizer
    lengths = {len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in PROMPTS}
    assert len(lengths) == len(PROMPTS)  # every prompt has its own length: padding is exercised
    outputs = {
        bs: generate(model, tokenizer, PROMPTS, max_new_tokens=10, batch_size=bs, device="cpu")
        for bs in (1, 3, 4)
    }
    assert outputs[1] == outputs[3] == outputs[4]
    assert len(outputs[1]) == len(PROMPTS)
    assert len(set(outputs[1])) > 1  # the model says different things to different prompts


def test_matches_hand_written_greedy_loop(model_and_tokenizer):
    from tuneyard.core.generation import generate

    model, tokenizer = model_and_tokenizer
    got = generate(model, tokenizer, PROMPTS, max_new_tokens=8, batch_size=4, device="cpu")
    assert got == [reference_greedy(model, tokenizer, p, 8) for p in PROMPTS]


def test_restores_padding_side_and_training_mode(model_and_tokenizer):
    from tuneyard.core.generation import generate

    model, tokenizer = model_and_tokenizer
    tokenizer.padding_side = "right"
    model.train()
    try:
        generate(model, tokenizer, PROMPTS[:2], max_new_tokens=2, batch_size=2, device="cpu")
        assert tokenizer.padding_side == "right"
        assert model.training
    finally:
        model.eval()


def test_decodes_only_new_tokens(model_and_tokenizer):
    """With max_new_tokens=1 the output is exactly the one predicted token, not the prompt."""
    import torch

    from tuneyard.core.generation import generate

    model, tokenizer = model_and_tokenizer
    ids = tokenizer(PROMPTS[1], add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        next_id = int(model(input_ids=ids).logits[0, -1].argmax())
    expected = tokenizer.decode([next_id], skip_special_tokens=True).strip()
    assert generate(model, tokenizer, [PROMPTS[1]], max_new_tokens=1, batch_size=1,
                    device="cpu") == [expected]


def test_rejects_empty_prompt(model_and_tokenizer):
    from tuneyard.core.generation import generate

    model, tokenizer = model_and_tokenizer
    side = tokenizer.padding_side
    with pytest.raises(ValueError, match="prompt 1 has no tokens"):
        generate(model, tokenizer, ["the cat", ""], max_new_tokens=2, batch_size=2, device="cpu")
    assert tokenizer.padding_side == side
