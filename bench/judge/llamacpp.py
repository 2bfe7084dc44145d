"""The offline judge: a GGUF model run in-process by llama.cpp (`llama-cpp-python`), greedy and deterministic.

Besides completions it offers `readout`: one forward pass over a pre-filled reply that returns the next-token
log-probabilities at chosen positions, which is what Bills et al.'s "all at once" simulation needs and what HTTP
endpoints cannot give; and `choose` and `readouts`: several prompts that share a prefix, decoded side by side as
sequences of one batch (small batches leave the matrix kernels idle: ~85 prompt tokens/s in 32-token calls against
~100 in batches of a few hundred on 2 cores, with flash attention). The KV cache keeps the longest common prefix
between calls, so prompts that share their instructions only pay for what differs. Uses `Llama`'s context and
batch objects directly (llama-cpp-python 0.3.x).

Determinism: what a call returns depends only on its arguments, never on what the cache held before. llama.cpp's
quantised kernels round a token's activations differently depending on the shape of the batch it is computed in
(on the 1.5B judge one prompt's P(yes) moved by up to 0.035 between a cold cache and one warmed by the previous
prompt), so every prompt is computed in canonical pieces: its first message (the instructions) as one batch from
an empty cache, then blocks from there, then each generated token alone. Readouts use blocks of `BLOCK` tokens, so
that one keeps the whole blocks it shares with the last (the simulation prompt's worked example); completions and
choices share nothing beyond their instructions and take the rest as one piece (`n_batch` tokens), the faster
shape. For `choose` and `readouts` the answer is a function of the whole list of prompts (each decoded beside the
others), so callers send a fixed group (a feature's samples of one scorer) and cache it as a whole.
"""

from __future__ import annotations

import contextlib
from typing import Any, Sequence

import numpy as np

from bench.errors import BenchError
from bench.judge.base import Completion, JudgeConfig, Message, RequestFailed
from bench.judge.weights import judge_weights


MAX_GROUP = 32  # prompts `choose` and `readouts` decode side by side: KV sequences 1..MAX_GROUP (0 holds the shared prefix)
BLOCK = 32  # tokens per canonical piece after a readout's first message: what readouts can share beyond it


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
        self._use_sequences(MAX_GROUP + 1)
        self._kv: list[int] = []  # tokens whose keys and values sit in sequence 0 of the context, in order
        self._layout = (0, BLOCK)  # the anchor and block size of the pieces they were computed in (`_prefill`)
        self._complete: set[int] = set()  # ends of the pieces computed whole: what a later call may keep

    def __repr__(self) -> str:
        return f"LlamaCppBackend({self.name})"

    def _use_sequences(self, n: int) -> None:
        """Recreate the context with room for `n` sequences in one KV cache (`Llama` makes it for one), with flash
        attention (on 2 cores: +12% prompt tokens/s for a group side by side, +6% generated, -3% in 32-token pieces)."""
        from llama_cpp import _internals

        params = self.llm.context_params
        params.n_seq_max, params.kv_unified = n, True
        params.flash_attn_type = self._lib.LLAMA_FLASH_ATTN_TYPE_ENABLED
        self.llm._ctx.close()
        self.llm._ctx = self.llm._stack.enter_context(contextlib.closing(
            _internals.LlamaContext(model=self.llm._model, params=params, verbose=False)))

    def check(self) -> None:
        """Loading the model already proved it usable."""

    def close(self) -> None:
        """Free the model now (left to the garbage collector, llama.cpp complains at interpreter exit)."""
        self.llm.close()

    # --- tokens ------------------------------------------------------------------------------------------
    def _render(self, messages: Sequence[Message], reply: bool) -> list[int]:
        text = self._template.render(messages=[{"role": r, "content": c} for r, c in messages],
                                     add_generation_prompt=reply, bos_token="", eos_token="")
        return self.llm.tokenize(text.encode(), add_bos=False, special=True)

    def _prompt(self, messages: Sequence[Message]) -> tuple[list[int], int]:
        """The prompt's tokens and its anchor: the length of its first message, the piece computed on its own and
        reused between calls (0 where the template does not render that message as a prefix)."""
        tokens = self._render(messages, True)
        first = self._render(messages[:1], False) if len(messages) > 1 else []
        anchor = len(first) if first and tokens[: len(first)] == first else 0
        return tokens, anchor if anchor <= self.llm.n_batch else 0

    def _piece(self, token: int) -> str:
        return self.llm.detokenize([token]).decode("utf-8", errors="replace")

    def _is_end(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self._vocab, token))

    # --- the forward pass --------------------------------------------------------------------------------
    def _run_batch(self, rows: Sequence[tuple[int, int, int, bool]]) -> None:
        """Decode one batch of rows (token, position, sequence, logits wanted); read them with `_logits(row)`."""
        batch = self.llm._batch.batch
        batch.n_tokens = len(rows)
        for i, (token, pos, seq, wanted) in enumerate(rows):
            batch.token[i], batch.pos[i] = token, pos
            batch.seq_id[i][0], batch.n_seq_id[i] = seq, 1
            batch.logits[i] = wanted
        try:
            self.llm._ctx.decode(self.llm._batch)
        except RuntimeError as e:
            self._kv.clear()
            self._complete.clear()
            self.llm._ctx.kv_cache_seq_rm(-1, 0, -1)
            raise RequestFailed(f"llama.cpp decode failed: {e}") from None

    def _decode(self, tokens: Sequence[int], start: int, want: set[int]) -> dict[int, np.ndarray]:
        """Decode `tokens` at positions start.. of sequence 0 as one batch; logits `[n_vocab]` at `want`."""
        self._run_batch([(t, start + i, 0, start + i in want) for i, t in enumerate(tokens)])
        return {start + i: self._logits(i) for i in range(len(tokens)) if start + i in want}

    def _logits(self, row: int) -> np.ndarray:
        return np.ctypeslib.as_array(self.llm._ctx.get_logits_ith(row), shape=(self._n_vocab,)).copy()

    def _prefill(self, tokens: list[int], anchor: int, want: Sequence[int], block: int) -> dict[int, np.ndarray]:
        """Fill sequence 0 with `tokens` in canonical pieces (module docstring): the first `anchor` tokens, then
        blocks of `block` from there. Whole pieces the previous call computed the same way are kept. Logits
        `[n_vocab]` at each position in `want`."""
        if len(tokens) > self._n_ctx:
            raise RequestFailed(f"prompt of {len(tokens)} tokens exceeds the judge's context of {self._n_ctx}")
        starts = sorted({0, anchor, *range(anchor + block, len(tokens), block)})
        ends = [*starts[1:], len(tokens)]
        first = min(want, default=len(tokens))
        keep = 0
        if self._layout == (anchor, block):
            for end in ends:  # a piece ending at `end` is reusable if the last call completed it on the same tokens
                if end > first or end not in self._complete or self._kv[keep:end] != tokens[keep:end]:
                    break
                keep = end
        self.llm._ctx.kv_cache_seq_rm(-1, keep, -1)
        del self._kv[keep:]
        self._complete = {e for e in self._complete if e <= keep}
        self._layout = (anchor, block)
        out: dict[int, np.ndarray] = {}
        wanted = set(want)
        for begin, end in zip(starts, ends, strict=True):
            if end <= keep or begin == end:
                continue
            out.update(self._decode(tokens[begin:end], begin, wanted))
            self._kv.extend(tokens[begin:end])
            if end == anchor or (end - anchor) % block == 0:
                self._complete.add(end)
        return out

    # --- the backend interface ---------------------------------------------------------------------------
    def complete(self, messages: Sequence[Message], max_tokens: int, logprobs: int = 0,
                 stop: Sequence[str] = ()) -> Completion:
        tokens, anchor = self._prompt(messages)
        n_prompt = len(tokens)
        generated: list[int] = []
        pieces: list[str] = []
        tops: list[dict[str, float]] = []
        logits = self._prefill(tokens, anchor, [len(tokens) - 1], self.llm.n_batch)[len(tokens) - 1] \
            if max_tokens > 0 else None
        for step in range(max_tokens):
            if step:  # each generated token alone, after the prompt's canonical pieces
                logits = self._decode([tokens[-1]], len(tokens) - 1, {len(tokens) - 1})[len(tokens) - 1]
                self._kv.append(tokens[-1])
            token, table = self._step(logits, logprobs)
            if token is None:
                break
            if logprobs:
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

    def _step(self, logits: np.ndarray, logprobs: int) -> tuple[int | None, dict[str, float]]:
        """The greedy next token (None: end of reply) and its top-`logprobs` table {piece: log-probability}."""
        token = int(np.argmax(logits))
        if self._is_end(token):
            return None, {}
        table: dict[str, float] = {}
        if logprobs:
            lp = _log_softmax(logits)
            best = np.argpartition(-lp, logprobs)[:logprobs]
            for t in best[np.argsort(-lp[best])]:
                table.setdefault(self._piece(int(t)), float(lp[t]))  # first (likelier) of equal pieces
        return token, table

    def _side_by_side(self, prepared: Sequence[tuple[list[int], int]], wants: Sequence[Sequence[int]],
                      block: int) -> list[dict[int, np.ndarray]] | None:
        """Decode prompts (tokens, anchor) side by side: their common prefix once, in sequence 0 (canonical pieces),
        then the rest of every prompt as sequences 1..`MAX_GROUP` of one batch, at most one `n_batch` of tokens
        per decode, split in list order. Logits `[n_vocab]` at each prompt's positions in `wants`. None where a rest
        does not fit one decode (the caller then takes the prompts one at a time)."""
        tokens = [t for t, _ in prepared]
        common = 0
        for column in zip(*tokens, strict=False):
            if any(t != column[0] for t in column):
                break
            common += 1
        # every sequence decodes its own wanted positions (and at least its last token)
        common = min(common, *(min(w, default=len(t) - 1) for w, t in zip(wants, tokens, strict=True)))
        if max(len(t) for t in tokens) - common > self.llm.n_batch or common + self.llm.n_batch > self._n_ctx:
            return None
        anchor = prepared[0][1] if all(a == prepared[0][1] for _, a in prepared) and prepared[0][1] <= common else 0
        self._prefill(tokens[0][:common], anchor, [], block)
        chunks: list[list[int]] = [[]]
        for i, t in enumerate(tokens):
            chunk = chunks[-1]
            if chunk and (len(chunk) == MAX_GROUP or sum(len(tokens[j]) - common for j in chunk) + len(t) - common
                          > self.llm.n_batch):
                chunks.append(chunk := [])
            chunk.append(i)
        ctx = self.llm._ctx
        out: list[dict[int, np.ndarray]] = []
        for chunk in chunks:
            rows: list[tuple[int, int, int, bool]] = []
            read: list[dict[int, int]] = []  # per prompt: {position: batch row}
            for seq, i in enumerate(chunk, 1):
                ctx.kv_cache_seq_cp(0, seq, 0, common)
                want = set(wants[i])
                read.append({pos: len(rows) + k for k, pos in enumerate(range(common, len(tokens[i]))) if pos in want})
                rows += [(t, pos, seq, pos in want) for pos, t in enumerate(tokens[i][common:], common)]
            try:
                self._run_batch(rows)
            finally:
                for seq in range(1, len(chunk) + 1):
                    ctx.kv_cache_seq_rm(seq, -1, -1)
            out += [{pos: self._logits(row) for pos, row in r.items()} for r in read]
        return out

    def choose(self, prompts: Sequence[Sequence[Message]], logprobs: int) -> list[Completion]:
        """One-token completions of `prompts` (as `complete(m, 1, logprobs)` each), decoded side by side
        (`_side_by_side`). A function of the whole list (module docstring)."""
        prepared = [self._prompt(m) for m in prompts]
        logits = self._side_by_side(prepared, [[len(t) - 1] for t, _ in prepared], self.llm.n_batch)
        if logits is None:
            return [self.complete(m, 1, logprobs) for m in prompts]
        out = []
        for (t, _), got in zip(prepared, logits, strict=True):
            token, table = self._step(got[len(t) - 1], logprobs)
            piece = self._piece(token) if token is not None else ""
            out.append(Completion(piece, [piece] if token is not None and logprobs else [],
                                  [table] if token is not None and logprobs else [], len(t), int(token is not None)))
        return out

    def _prefilled(self, messages: Sequence[Message], pieces: Sequence[str]) -> tuple[list[int], int, list[int]]:
        """The prompt with the reply pre-filled by `pieces`: (tokens, anchor, the position of each piece's end)."""
        tokens, anchor = self._prompt(messages)
        ends = []
        for piece in pieces:
            tokens.extend(self.llm.tokenize(piece.encode(), add_bos=False, special=False))
            ends.append(len(tokens) - 1)
        return tokens, anchor, ends

    def _single_tokens(self, candidates: Sequence[str]) -> dict[str, int]:
        """The candidates that are one token each, with their token ids."""
        ids = {c: self.llm.tokenize(c.encode(), add_bos=False, special=False) for c in candidates}
        return {c: t[0] for c, t in ids.items() if len(t) == 1}

    def _tables(self, logits: dict[int, np.ndarray], ends: Sequence[int], slots: Sequence[int],
                ids: dict[str, int], n_tokens: int) -> dict[str, Any]:
        tables = []
        for s in slots:
            lp = _log_softmax(logits[ends[s]])
            tables.append({c: float(lp[t]) for c, t in ids.items()})
        return {"tables": tables, "prompt_tokens": n_tokens}

    def readout(self, messages: Sequence[Message], pieces: Sequence[str], slots: Sequence[int],
                candidates: Sequence[str]) -> dict[str, Any]:
        """Log-probabilities of each single-token candidate after each piece in `slots` of a pre-filled reply."""
        tokens, anchor, ends = self._prefilled(messages, pieces)
        return self._tables(self._prefill(tokens, anchor, [ends[s] for s in slots], BLOCK), ends, slots,
                            self._single_tokens(candidates), len(tokens))

    def readouts(self, requests: Sequence[tuple[Sequence[Message], Sequence[str], Sequence[int]]],
                 candidates: Sequence[str]) -> list[dict[str, Any]]:
        """`readout` of each (messages, pieces, slots), decoded side by side (`_side_by_side`): a function of the
        whole list, as `choose` is."""
        built = [self._prefilled(m, p) for m, p, _ in requests]
        logits = self._side_by_side([(t, a) for t, a, _ in built],
                                    [[ends[s] for s in r[2]] for (_, _, ends), r in zip(built, requests, strict=True)],
                                    BLOCK)
        if logits is None:
            return [self.readout(m, p, s, candidates) for m, p, s in requests]
        ids = self._single_tokens(candidates)
        return [self._tables(got, ends, r[2], ids, len(t))
                for (t, _, ends), r, got in zip(built, requests, logits, strict=True)]
