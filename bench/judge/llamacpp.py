"""The offline judge: a GGUF model run in-process by llama.cpp (`llama-cpp-python`), greedy and deterministic.

Besides completions it offers `readout`: one forward pass over a pre-filled reply that returns the next-token
log-probabilities at chosen positions, which is what Bills et al.'s "all at once" simulation needs and what HTTP
endpoints cannot give. The KV cache keeps the longest common prefix between calls, so prompts that share their
instructions only pay for what differs. Uses `Llama`'s context and batch objects directly (llama-cpp-python 0.3.x).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from bench.errors import BenchError
from bench.judge.base import Completion, JudgeConfig, Message, RequestFailed
from bench.judge.weights import judge_weights


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


class LlamaCppBackend:
    concurrency = 1  # one context, one request at a time

    def __init__(self, cfg: JudgeConfig) -> None:
        try:
            import jinja2.sandbox
            import llama_cpp
        except ImportError:
            raise BenchError("the offline judge needs llama-cpp-python: `pip install -e .`") from None
        model, path = judge_weights(cfg.judge)
        self.name = f"llama.cpp:{model}"
        self.path = path
        self._lib = llama_cpp
        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=cfg.n_ctx, n_batch=512, n_threads=cfg.threads,
                                   n_threads_batch=cfg.threads, seed=0, verbose=False)
        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise BenchError(f"judge {path} has no chat template; use an instruct model's GGUF")
        self._template = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True) \
            .from_string(template)
        self._n_vocab = self.llm.n_vocab()
        self._n_ctx = cfg.n_ctx
        self._vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self._kv: list[int] = []  # tokens whose keys and values sit in the context, in order

    def __repr__(self) -> str:
        return f"LlamaCppBackend({self.name})"

    def check(self) -> None:
        """Loading the model already proved it usable."""

    def close(self) -> None:
        """Free the model now (left to the garbage collector, llama.cpp complains at interpreter exit)."""
        self.llm.close()

    # --- tokens ------------------------------------------------------------------------------------------
    def _prompt(self, messages: Sequence[Message]) -> list[int]:
        text = self._template.render(messages=[{"role": r, "content": c} for r, c in messages],
                                     add_generation_prompt=True, bos_token="", eos_token="")
        return self.llm.tokenize(text.encode(), add_bos=False, special=True)

    def _piece(self, token: int) -> str:
        return self.llm.detokenize([token]).decode("utf-8", errors="replace")

    def _is_end(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self._vocab, token))

    # --- the forward pass --------------------------------------------------------------------------------
    def _forward(self, tokens: list[int], want: list[int]) -> dict[int, np.ndarray]:
        """Logits `[n_vocab]` at each position in `want`, reusing the cached prefix where it allows."""
        if len(tokens) > self._n_ctx:
            raise RequestFailed(f"prompt of {len(tokens)} tokens exceeds the judge's context of {self._n_ctx}")
        common = 0
        for a, b in zip(self._kv, tokens, strict=False):
            if a != b:
                break
            common += 1
        # Positions read out are recomputed, and every batch holds at least two tokens: llama.cpp's one-token kernels
        # round differently (up to 0.4 in a log-probability) while batches of two or more agree exactly, so what
        # a request returns never depends on what the cache held before it.
        common = max(0, min([common, len(tokens) - 2, *want]))
        self.llm._ctx.kv_cache_seq_rm(-1, common, -1)
        del self._kv[common:]
        wanted, out = set(want), {}
        batch, n_batch = self.llm._batch.batch, self.llm.n_batch
        start = common
        while start < len(tokens):
            size = min(n_batch, len(tokens) - start)
            size -= len(tokens) - start - size == 1  # never leave a single token for the last batch
            chunk = tokens[start : start + size]
            batch.n_tokens = len(chunk)
            for i, t in enumerate(chunk):
                batch.token[i], batch.pos[i] = t, start + i
                batch.seq_id[i][0], batch.n_seq_id[i] = 0, 1
                batch.logits[i] = (start + i) in wanted
            try:
                self.llm._ctx.decode(self.llm._batch)
            except RuntimeError as e:
                self._kv.clear()
                self.llm._ctx.kv_cache_seq_rm(-1, 0, -1)
                raise RequestFailed(f"llama.cpp decode failed: {e}") from None
            self._kv.extend(chunk)
            for i in range(len(chunk)):
                if start + i in wanted:
                    ptr = self.llm._ctx.get_logits_ith(i)
                    out[start + i] = np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).copy()
            start += size
        return out

    # --- the backend interface ---------------------------------------------------------------------------
    def complete(self, messages: Sequence[Message], max_tokens: int, logprobs: int = 0,
                 stop: Sequence[str] = ()) -> Completion:
        tokens = self._prompt(messages)
        n_prompt = len(tokens)
        generated: list[int] = []
        pieces: list[str] = []
        tops: list[dict[str, float]] = []
        for _ in range(max_tokens):
            logits = self._forward(tokens, [len(tokens) - 1])[len(tokens) - 1]
            token = int(np.argmax(logits))
            if self._is_end(token):
                break
            if logprobs:
                lp = _log_softmax(logits)
                best = np.argpartition(-lp, logprobs)[:logprobs]
                table: dict[str, float] = {}
                for t in best[np.argsort(-lp[best])]:
                    table.setdefault(self._piece(int(t)), float(lp[t]))  # first (likelier) of equal pieces
                tops.append(table)
            generated.append(token)
            pieces.append(self._piece(token))
            tokens.append(token)
            text = "".join(pieces)
            if stop and any(s in text for s in stop):
                break
        text = self.llm.detokenize(generated).decode("utf-8", errors="replace")
        for s in stop:
            text = text.split(s)[0] if s in text else text
        return Completion(text, pieces if logprobs else [], tops, n_prompt, len(generated))

    def readout(self, messages: Sequence[Message], pieces: Sequence[str], slots: Sequence[int],
                candidates: Sequence[str]) -> dict[str, Any]:
        """Log-probabilities of each single-token candidate after each piece in `slots` of a pre-filled reply."""
        tokens = self._prompt(messages)
        ends = []
        for piece in pieces:
            tokens.extend(self.llm.tokenize(piece.encode(), add_bos=False, special=False))
            ends.append(len(tokens) - 1)
        ids = {}
        for c in candidates:
            t = self.llm.tokenize(c.encode(), add_bos=False, special=False)
            if len(t) == 1:
                ids[c] = t[0]
        logits = self._forward(tokens, [ends[s] for s in slots])
        tables = []
        for s in slots:
            lp = _log_softmax(logits[ends[s]])
            tables.append({c: float(lp[t]) for c, t in ids.items()})
        return {"tables": tables, "prompt_tokens": len(tokens)}
