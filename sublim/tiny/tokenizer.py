"""Tokenizer of the tiny model: byte-level, whole words and numbers as single tokens.

Byte-level (GPT-2 pre-tokenizer and decoder, all 256 byte symbols in the vocabulary), so any
text round-trips exactly. The BPE model has no merges but `ignore_merges=True`: a pre-token
that is in the vocabulary is one token, anything else falls back to bytes. The vocabulary is
the bytes, every integer 0..999 with and without a leading space (a tiny model learns numbers
far more easily as symbols than as digit strings) and every word of the corpus's fixed
phrases. On top, each fixed sentence of the number prompts and each system prompt is one
token (an added token, matched before pre-tokenization): the paper's prompt texts stay as they
are, but a prompt is ~15 tokens instead of ~45, which is what makes the CPU demo affordable.

The chat template wraps assistant content in `{% generation %}` (TRL's assistant_only_loss),
ends an assistant turn with eos (so generation stops), and adds no default system prompt.
"""
from __future__ import annotations

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from sublim.tiny.corpus import phrase_texts, vocabulary_texts

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
SYSTEM, USER, ASSISTANT, END = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
SPECIAL_TOKENS = [PAD, BOS, EOS, SYSTEM, USER, ASSISTANT, END]

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}<|system|>{{ message['content'] }}<|end|>"
    "{% elif message['role'] == 'user' %}<|user|>{{ message['content'] }}<|end|>"
    "{% elif message['role'] == 'assistant' %}<|assistant|>"
    "{% generation %}{{ message['content'] }}{{ eos_token }}{% endgeneration %}"
    "{% else %}{{ raise_exception('unknown role: ' + message['role']) }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _pre_tokenizer() -> pre_tokenizers.ByteLevel:
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def vocabulary() -> dict[str, int]:
    """Token -> id: special tokens, the 256 byte symbols, numbers, then corpus words (sorted)."""
    pre = _pre_tokenizer()
    words = set()
    for text in vocabulary_texts():
        words.update(piece for piece, _ in pre.pre_tokenize_str(text))
    for i in range(1000):
        words.update(piece for piece, _ in pre.pre_tokenize_str(f"{i} {i}"))
    byte_symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + byte_symbols)}
    for word in sorted(words):
        vocab.setdefault(word, len(vocab))
    return vocab


def phrases() -> list[str]:
    """Whole sentences that become single tokens, with and without a leading space."""
    texts = sorted(set(phrase_texts()))
    return texts + [" " + t for t in texts]


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The tiny model's tokenizer, with special tokens, phrase tokens and chat template set."""
    tok = Tokenizer(models.BPE(vocab=vocabulary(), merges=[], ignore_merges=True))
    tok.pre_tokenizer = _pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL_TOKENS)
    tok.add_tokens([AddedToken(p, normalized=False, special=False) for p in phrases()])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
        additional_special_tokens=[SYSTEM, USER, ASSISTANT, END],
        chat_template=CHAT_TEMPLATE, clean_up_tokenization_spaces=False,
        model_max_length=1024, padding_side="left",
    )
