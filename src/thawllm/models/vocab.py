"""A SentencePiece-style (llama) vocabulary built from rules, for synthetic models.

Its layout follows the Llama 2 tokenizer: <unk>, <s>, </s>, the 256 byte
tokens <0x00>..<0xFF> that llama.cpp falls back to for text no piece
covers, then text pieces with descending scores. The pieces are ASCII
characters and letter strings, with and without the word-start mark.
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Iterator
from dataclasses import dataclass

# Token types of the GGUF tokenizer metadata (gguf.TokenType).
NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6
# SentencePiece marks the start of a word with U+2581 in place of a space.
WORD_START = "\u2581"
SPECIAL_TOKENS = (("<unk>", UNKNOWN), ("<s>", CONTROL), ("</s>", CONTROL))
BYTE_TOKENS = 256
MAX_PIECE_LETTERS = 4


@dataclass(frozen=True)
class SyntheticVocab:
    """Token texts, scores and types, with the ids of the special tokens."""

    tokens: list[str]
    scores: list[float]
    token_types: list[int]
    unk_id: int = 0
    bos_id: int = 1
    eos_id: int = 2


def build_vocab(size: int) -> SyntheticVocab:
    """Return a vocabulary of exactly SIZE tokens; the same SIZE always gives the same one."""
    fixed = len(SPECIAL_TOKENS) + BYTE_TOKENS
    if size <= fixed:
        raise ValueError(f"A synthetic vocabulary needs more than {fixed} tokens, not {size}.")
    tokens = [text for text, _ in SPECIAL_TOKENS]
    token_types = [kind for _, kind in SPECIAL_TOKENS]
    tokens += [f"<0x{value:02X}>" for value in range(BYTE_TOKENS)]
    token_types += [BYTE] * BYTE_TOKENS

    pieces = list(itertools.islice(_text_pieces(), size - fixed))
    if len(pieces) < size - fixed:
        raise ValueError(f"The synthetic vocabulary rules make {fixed + len(pieces)} tokens, fewer than {size}.")
    tokens += pieces
    token_types += [NORMAL] * len(pieces)
    # Pieces that come first merge first, as in a trained SentencePiece model.
    scores = [0.0] * fixed + [-float(rank) for rank in range(len(pieces))]
    return SyntheticVocab(tokens, scores, token_types)


def _text_pieces() -> Iterator[str]:
    yield WORD_START
    for char in string.printable.strip():
        yield char
        yield WORD_START + char
    for length in range(2, MAX_PIECE_LETTERS + 1):
        for letters in itertools.product(string.ascii_lowercase, repeat=length):
            word = "".join(letters)
            yield WORD_START + word
            yield word
