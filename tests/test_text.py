"""Text conditioning: Gemma-2 adapter on a tiny random Gemma-2 + offline tokenizer, and null text."""

import pytest
import torch
from _tiny_models import GEMMA_WORDS as WORDS
from _tiny_models import save_tiny_gemma

from sanawm.errors import UserInputError
from sanawm.text import GemmaTextEncoder, TextEncoderConfig


def _ids(text):
    return torch.tensor([[2] + [WORDS.index(w) for w in text.split()]])


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("gemma")
    save_tiny_gemma(directory)
    return directory


@torch.no_grad()
def test_prompt_states_are_the_unpadded_gemma_states(gemma_dir):
    config = TextEncoderConfig(max_length=8)
    encoder = GemmaTextEncoder.load(gemma_dir / "text_encoder", gemma_dir / "tokenizer", config)
    out = encoder.encode("a red car drives")
    assert out.states.shape == (1, 8, 32) and out.mask.tolist() == [[1, 1, 1, 1, 1, 0, 0, 0]]
    expected = encoder.model(input_ids=_ids("a red car drives")).last_hidden_state
    torch.testing.assert_close(out.states[:, :5], expected, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_prefix_conditions_the_prompt_but_only_bos_and_the_tail_are_kept(gemma_dir):
    prefix = "describe this scene "
    config = TextEncoderConfig(max_length=6, prompt_prefix=prefix)
    encoder = GemmaTextEncoder.load(gemma_dir / "text_encoder", gemma_dir / "tokenizer", config)
    out = encoder.encode("a red car")
    # BOS + 3 prefix tokens + 3 prompt tokens; rows kept: BOS, last prefix token, the prompt, padding.
    full = encoder.model(input_ids=_ids(prefix + "a red car")).last_hidden_state
    assert out.states.shape == (1, 6, 32)
    assert out.mask.tolist() == [[1, 1, 1, 1, 1, 0]]
    torch.testing.assert_close(out.states[:, 0], full[:, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.states[:, 1:5], full[:, 3:7], rtol=1e-5, atol=1e-5)
    # The negative prompt is encoded without the prefix.
    negative = encoder.encode_negative("")
    assert negative.mask.tolist() == [[1, 0, 0, 0, 0, 0]]
    torch.testing.assert_close(
        negative.states[:, :1], encoder.model(input_ids=_ids("")).last_hidden_state, rtol=1e-5, atol=1e-5
    )


def test_missing_folders_are_named(tmp_path, gemma_dir):
    with pytest.raises(UserInputError, match="tokenizer folder not found"):
        GemmaTextEncoder.load(gemma_dir / "text_encoder", tmp_path / "nope", TextEncoderConfig())
    with pytest.raises(UserInputError, match="text encoder folder not found"):
        GemmaTextEncoder.load(tmp_path / "nope", gemma_dir / "tokenizer", TextEncoderConfig())
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="cannot load the text encoder"):
        GemmaTextEncoder.load(tmp_path / "empty", gemma_dir / "tokenizer", TextEncoderConfig())


def test_null_text_is_the_null_embedding_with_a_full_mask():
    from _tiny_models import tiny_transformer

    model = tiny_transformer(4, 24, 5, 7)
    table = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))
    model.y_embedder.y_embedding.copy_(table)
    out = model.null_text(batch=2)
    assert out.states.shape == (2, 7, 5) and out.mask.shape == (2, 7) and bool((out.mask == 1).all())
    torch.testing.assert_close(out.states[1], table, rtol=0, atol=0)
