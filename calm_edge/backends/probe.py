"""Can the installed llama.cpp use this GGUF file? Asked before a model joins the fleet.

A vocabulary-only load (llama.cpp reads the architecture, hyperparameters and vocabulary,
no weights: milliseconds even for GBs) says whether this build knows the architecture;
llama.cpp's own error line says what it refused. Then the chat template, if any, is
rendered the way the backend renders it (llama-cpp-python's Jinja2ChatFormatter), so a
template it cannot render is refused now instead of failing every request later.
Blocking; import-light until called.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SAMPLE_USER = ({"role": "user", "content": "What is the capital of France?"},)
_SAMPLE_SYSTEM = ({"role": "system", "content": "You are a helpful assistant."},
                  *_SAMPLE_USER)


class ProbeError(ValueError):
    """llama.cpp cannot use the file; the message says why."""


@dataclass(frozen=True)
class ProbeResult:
    backend: str                     # which llama.cpp answered
    template_ok: bool                # a chat template exists and rendered a user message
    notes: tuple[str, ...] = ()      # what works but deserves a word (e.g. no system role)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _native_error(lines: list[str]) -> str:
    """llama.cpp's reason, e.g. "unknown model architecture: 'foo'"."""
    for line in lines:
        if "error loading model:" in line:
            return line.split("error loading model:", 1)[1].strip()
    return lines[0].strip() if lines else "no reason given"


def probe_llama_cpp(path: Path, chat_template: str | None) -> ProbeResult:
    """Vocab-only load of `path`, then a render of `chat_template` (None: not checked).
    Raises ProbeError naming the file and llama.cpp's reason."""
    import llama_cpp
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from calm_edge.backends.llama_cpp import _native_log, _route_native_logs

    backend = f"llama-cpp-python {llama_cpp.__version__}"
    _route_native_logs()
    collect = _Collect()
    _native_log.addHandler(collect)
    propagate, _native_log.propagate = _native_log.propagate, False
    try:
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    finally:
        _native_log.removeHandler(collect)
        _native_log.propagate = propagate
    if not model:
        raise ProbeError(f"{path}: {backend} cannot load it: {_native_error(collect.lines)}")
    try:
        vocab = llama_cpp.llama_model_get_vocab(model)

        def text(token: int) -> str:
            if token < 0:
                return ""
            raw: Any = llama_cpp.llama_vocab_get_text(vocab, token)
            return raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else ""

        eos, bos = text(llama_cpp.llama_vocab_eos(vocab)), text(llama_cpp.llama_vocab_bos(vocab))
    finally:
        llama_cpp.llama_model_free(model)
    if chat_template is None:
        return ProbeResult(backend, template_ok=False)
    try:
        fmt = Jinja2ChatFormatter(template=chat_template, eos_token=eos, bos_token=bos)
        rendered = fmt(messages=list(_SAMPLE_USER))  # type: ignore[arg-type]
    except Exception as e:  # jinja2 raises many kinds; any of them means requests would fail
        raise ProbeError(f"{path}: its chat template (tokenizer.chat_template) does not render "
                         f"with {backend}: {type(e).__name__}: {e}") from None
    if _SAMPLE_USER[0]["content"] not in rendered.prompt:
        raise ProbeError(f"{path}: its chat template (tokenizer.chat_template) renders a "
                         "prompt without the user's message")
    notes = []
    try:
        fmt(messages=list(_SAMPLE_SYSTEM))  # type: ignore[arg-type]
    except Exception as e:
        notes.append(f"its chat template refuses a system message ({e}); requests that bring "
                     "one will fail")
    return ProbeResult(backend, template_ok=True, notes=tuple(notes))
