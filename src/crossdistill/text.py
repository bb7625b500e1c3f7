"""Self-built word-level tokenizers: tiny text models need no vocabulary files.

`word_tokenizer` returns a standard `PreTrainedTokenizerFast`, so it saves with
`save_pretrained` (tokenizer.json) and is loaded back by diffusers pipelines like any
other tokenizer. Two layouts mirror the real ones: "clip" wraps a prompt in
start/end tokens and pads with a pad token; "t5" appends an end token only.
"""

from __future__ import annotations

from .errors import CrossdistillError, choice_error

# special tokens, in id order, per style; the end token id must not be 2 for CLIP
# (transformers treats eos_token_id == 2 as a legacy config and pools at argmax(ids))
_SPECIALS = {
    "clip": {"pad": "<pad>", "unk": "<unk>", "bos": "<|startoftext|>", "eos": "<|endoftext|>"},
    "t5": {"pad": "<pad>", "eos": "</s>", "unk": "<unk>"},
}


def word_tokenizer(words: list[str], style: str = "clip", model_max_length: int = 16):
    """A lower-casing whitespace/punctuation word tokenizer over `words`."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if style not in _SPECIALS:
        raise choice_error("tokenizer style", style, _SPECIALS)
    specials = _SPECIALS[style]
    vocab: dict[str, int] = {}
    for tok in list(specials.values()) + [w.lower() for w in words]:
        vocab.setdefault(tok, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=specials["unk"]))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    eos = specials["eos"]
    if style == "clip":
        bos = specials["bos"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A {eos}", special_tokens=[(bos, vocab[bos]), (eos, vocab[eos])])
    else:
        tok.post_processor = processors.TemplateProcessing(
            single=f"$A {eos}", special_tokens=[(eos, vocab[eos])])
    kwargs = {k + "_token": v for k, v in specials.items()}
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length, **kwargs)


def word_positions(tokenizer, prompt: str, max_length: int, offset: int = 0) -> list[list[int]]:
    """For each whitespace word of `prompt`, the positions of its tokens in the padded
    sequence `tokenizer` makes (special tokens included, truncated at `max_length`),
    shifted by `offset`. Works for any tokenizer that splits at spaces (CLIP's BPE, T5's
    sentencepiece, the word tokenizers): a word's tokens are the ones its prefix adds."""
    words = prompt.split()
    full = tokenizer(prompt).input_ids
    body = tokenizer(prompt, add_special_tokens=False).input_ids
    start = next((i for i in range(len(full) - len(body) + 1) if full[i:i + len(body)] == body), None)
    if start is None:
        raise CrossdistillError(f"cannot place the tokens of {prompt!r} in its encoding")
    # truncation keeps the special tokens after the words: word tokens end before them
    limit = max_length - (len(full) - start - len(body))
    out, before = [], 0
    for k in range(1, len(words) + 1):
        upto = len(tokenizer(" ".join(words[:k]), add_special_tokens=False).input_ids)
        out.append([offset + start + j for j in range(before, upto) if start + j < limit])
        before = upto
    return out
