"""Query text -> fixed-size float32 feature vector; the same code at training and run time.

Pure, deterministic, no global state, thread-safe. The vector layout (version
`FEATURE_SPEC_VERSION`; any change to what follows must bump it, and the artifacts record it):

    [0, HASH_DIM)               signed hashed n-gram features
    [HASH_DIM, FEATURE_DIM)     dense features, in the order of DENSE_FEATURES, each in [0, 1]

Normalization (`normalize`): the text is cut to its first `MAX_CHARS` characters,
lowercased, each run of whitespace becomes one space, one space is added at each end, and in
its UTF-8 bytes every ASCII digit becomes "0" (numbers matter as a shape, not a value).
Everything below works on those bytes.

Hashed features: each n-gram has a 64-bit key (`char_key`, `unigram_key`, `bigram_key`):
  * character n-grams (byte n-grams; the same as character n-grams for ASCII text): at
    every start position i in [0, len - min(CHAR_NGRAM_SIZES)], one n-gram of each size n in
    CHAR_NGRAM_SIZES, the bytes past the end reading as NUL (so the last few are "end of
    text" grams); key = the n bytes read as a little-endian integer (exact, no hash);
  * word unigrams, a word being a maximal run of bytes in [a-z0-9_] or >= 0x80:
    key = zlib.crc32(word) | 1 << 48;
  * word bigrams (adjacent words): key = (crc32(w1) << 32 | crc32(w2)) ^ 1 << 63.
  A key k goes to slot = (k * 0x9E3779B97F4A7C15 mod 2**64) >> 52 (Fibonacci hashing: the
  top 12 bits); sign = -1 if slot >= HASH_DIM else +1; bucket = slot mod HASH_DIM; the
  n-gram adds sign * w to its bucket, with w = 1/sqrt(number of character n-grams) for
  character n-grams and w = 1/sqrt(number of word uni+bigrams) for word n-grams, so each
  group has norm ~1.

The scalar reference `slot_of` and the key functions define the mapping; the vectorized
`extract_into` must agree with them (tests check known values).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FEATURE_SPEC_VERSION = 1
HASH_DIM = 2048  # 2**11: the slot is the top 12 bits (sign + 11 bucket bits)
CHAR_NGRAM_SIZES: tuple[int, ...] = (3, 4, 5)  # each <= 7 (keys are < 2**56)
MAX_CHARS = 1024
DENSE_FEATURES: tuple[str, ...] = (
    "log_chars",  # log1p(len(text)) / log1p(4096), clipped; uses the FULL text length
    "log_words",  # log1p(number of words in the cut text) / log1p(512), clipped
    "digit_ratio",  # decimal digits / bytes
    "code_symbol_ratio",  # bytes in _CODE_SYMBOLS / bytes
    "newline_density",  # min(1, newlines / 16)
    "indented_lines",  # min(1, lines starting with 4 spaces or a tab / 8)
    "has_question_mark",  # 1.0 if "?" occurs
)
FEATURE_DIM = HASH_DIM + len(DENSE_FEATURES)

_MULT64 = 0x9E3779B97F4A7C15
_SLOT_SHIFT = 64 - (2 * HASH_DIM).bit_length() + 1
_UNIGRAM_TAG = 1 << 48
_BIGRAM_TAG = 1 << 63
_MASK64 = (1 << 64) - 1
_U64 = np.uint64
_CHAR_MASKS = np.array([(1 << (8 * n)) - 1 for n in CHAR_NGRAM_SIZES], dtype=np.uint64)
_MIN_N = min(CHAR_NGRAM_SIZES)
_PAD = b"\0" * 7  # lets an unaligned 8-byte read start at any byte of the text

_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_WORD_BYTES = b"abcdefghijklmnopqrstuvwxyz0123456789_" + bytes(range(0x80, 0x100))
_NON_WORD_TO_SPACE = bytes(b if b in _WORD_BYTES else 0x20 for b in range(256))
_CODE_SYMBOLS = b"{}[]()<>=;_#/\\|&*+-`$%^~:@"
_LOG_4096 = math.log1p(4096.0)
_LOG_512 = math.log1p(512.0)

FloatVector = npt.NDArray[np.float32]


def normalize(text: str) -> bytes:
    """The normalized UTF-8 bytes the n-grams see: cut, lowercased, whitespace runs -> one
    space, one space added at each end, ASCII digits -> "0"."""
    return (
        (" " + " ".join(text[:MAX_CHARS].lower().split()) + " ")
        .encode("utf-8")
        .translate(_DIGITS_TO_ZERO)
    )


def words_of(normalized: bytes) -> list[bytes]:
    """The words of a normalized text's UTF-8 bytes."""
    return normalized.translate(_NON_WORD_TO_SPACE).split()


def char_key(ngram: bytes) -> int:
    return int.from_bytes(ngram, "little")


def unigram_key(word: bytes) -> int:
    return zlib.crc32(word) | _UNIGRAM_TAG


def bigram_key(first: bytes, second: bytes) -> int:
    return ((zlib.crc32(first) << 32) | zlib.crc32(second)) ^ _BIGRAM_TAG


def slot_of(key: int) -> tuple[int, int]:
    """Reference mapping of a key to (bucket, sign)."""
    slot = ((key * _MULT64) & _MASK64) >> _SLOT_SHIFT
    return (slot % HASH_DIM, -1 if slot >= HASH_DIM else 1)


def extract_into(text: str, out: FloatVector) -> None:
    """Write the features of `text` into `out` (shape (FEATURE_DIM,), float32), overwriting it.

    Cost: about 15 vectorized numpy calls over at most ~MAX_CHARS bytes, no per-character
    Python loop; the only per-word work is zlib.crc32 through `map`.
    """
    raw = text[:MAX_CHARS]
    norm = normalize(raw)
    length = len(norm)  # >= 2: the two padding spaces
    starts = length - _MIN_N + 1  # n-gram start positions; each takes every size
    # Unaligned, overlapping little-endian 8-byte windows, one per start position; bytes
    # past the end read as the zero padding.
    windows = np.ndarray((starts, 1), dtype="<u8", buffer=norm + _PAD, strides=(1, 8))
    char_keys = (windows & _CHAR_MASKS).ravel()
    n_char = char_keys.size

    words = words_of(norm)
    n_words = len(words)
    if n_words:
        crc = np.fromiter(map(zlib.crc32, words), np.uint64, n_words)
        bigrams = (crc[:-1] << _U64(32)) | crc[1:]
        bigrams ^= _U64(_BIGRAM_TAG)
        keys = np.concatenate((char_keys, crc | _U64(_UNIGRAM_TAG), bigrams))
    else:
        keys = char_keys
    n_word_feats = keys.size - n_char

    keys *= _U64(_MULT64)  # uint64 array arithmetic wraps modulo 2**64, without a warning
    keys >>= _U64(_SLOT_SHIFT)
    weights = np.repeat(
        (
            1.0 / math.sqrt(n_char) if n_char else 0.0,
            1.0 / math.sqrt(n_word_feats) if n_word_feats else 0.0,
        ),
        (n_char, n_word_feats),
    )
    per_slot = np.bincount(keys.view(np.int64), weights=weights, minlength=2 * HASH_DIM)
    np.subtract(per_slot[:HASH_DIM], per_slot[HASH_DIM:], out=out[:HASH_DIM])

    n_bytes = max(1, length - 2)
    dense = out[HASH_DIM:]
    dense[0] = min(1.0, math.log1p(len(text)) / _LOG_4096)
    dense[1] = min(1.0, math.log1p(n_words) / _LOG_512)
    dense[2] = norm.count(b"0") / n_bytes
    dense[3] = (length - len(norm.translate(None, _CODE_SYMBOLS))) / n_bytes
    dense[4] = min(1.0, raw.count("\n") / 16.0)
    dense[5] = min(1.0, (raw.count("\n    ") + raw.count("\n\t")) / 8.0)
    dense[6] = 1.0 if "?" in raw else 0.0


def extract(text: str) -> FloatVector:
    """Features of one text: a new float32 array of shape (FEATURE_DIM,)."""
    out = np.empty(FEATURE_DIM, dtype=np.float32)
    extract_into(text, out)
    return out


def extract_batch(texts: Sequence[str]) -> npt.NDArray[np.float32]:
    """Features of many texts: float32 array of shape (len(texts), FEATURE_DIM)."""
    out = np.empty((len(texts), FEATURE_DIM), dtype=np.float32)
    for i, text in enumerate(texts):
        extract_into(text, out[i])
    return out
