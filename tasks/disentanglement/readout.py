"""Reading an attribute's answer from the subject model with the city's activation replaced.

The edited activation goes in at the city's last token at the hook and only the layers after the hook run
(`SubjectModel.logits(..., clean=)`). Rows are batched by prompt length (little padding). The rows whose answer
needs a second token (values sharing a first token) run again with the chosen tokens appended and the same edit;
the clean activations of those longer prompts do not depend on the edit (the layers up to the hook are causal and
unedited), so they are computed once per (prompt, appended tokens) and kept for every later dictionary.
Two shortcuts that leave every comparison with the wanted answer as it is: decoding stops once the tokens chosen
so far rule the wanted value out (the answer reads -1, "not it"), and a row whose activation the edit left exactly
as it was takes its clean answer (`clean_answers`, read once by the task) without a pass.
"""

from __future__ import annotations

import numpy as np
import torch

from tasks.disentanglement.cities import Answers, Prompts
from tasks.prompts import pad_right


class ModelReadout:
    """`(rows [P], x [P, d], want [P]) -> answers [P]` for the prompts `prompts` of one attribute, read by
    `answers`: each an index into the values, or -1 where it is certain not to be `want`."""

    def __init__(self, model, hook: str, prompts: Prompts, clean: torch.Tensor, answers: Answers, pad: int,
                 batch: int = 64) -> None:
        self.model, self.hook, self.prompts, self.clean, self.answers = model, hook, prompts, clean, answers
        self.pad, self.batch = pad, batch
        self.x = clean[torch.arange(len(prompts.position)), prompts.position]  # `[N, d]` the city's activation
        self._ext_cache: dict[tuple[int, tuple[int, ...]], torch.Tensor] = {}  # (row, appended) -> `[T', d]`
        self.clean_answers: np.ndarray | None = None  # `[N]` set by `read_clean`

    def read_clean(self, want: np.ndarray) -> np.ndarray:
        """`[N]` every prompt's answer on its own activation (-1: not `want` `[N]`), kept for unedited rows."""
        self.clean_answers = self(np.arange(len(self.x)), self.x, want)
        return self.clean_answers

    def _edit(self, positions: torch.Tensor, x: torch.Tensor):
        def edit(act: torch.Tensor) -> torch.Tensor:
            act = act.clone()
            act[torch.arange(len(positions)), positions] = x.to(act)
            return act
        return edit

    def __call__(self, rows: np.ndarray, x: torch.Tensor, want: np.ndarray) -> np.ndarray:
        rows, want = np.asarray(rows), np.asarray(want)
        out = np.full(len(rows), -1, dtype=int)
        todo = np.arange(len(rows))
        if self.clean_answers is not None and len(rows):
            idx = torch.as_tensor(rows, dtype=torch.long)
            same = (x == self.x[idx]).all(-1).numpy() & (self.clean_answers[rows] >= 0)
            out[same] = self.clean_answers[rows[same]]  # unedited, with a known clean answer: it stays so
            todo = np.flatnonzero(~same)
        order = todo[np.argsort(self.prompts.length[torch.as_tensor(rows[todo], dtype=torch.long)].numpy(),
                                kind="stable")]
        for lo in range(0, len(order), self.batch):
            part = order[lo:lo + self.batch]
            out[part] = self._read(rows[part], x[torch.as_tensor(part, dtype=torch.long)], want[part])
        return out

    def _extended_clean(self, ext: list[list[int]], keys: list[tuple[int, tuple[int, ...]]]) -> torch.Tensor:
        """The clean activations `[B, T, d]` of the prompts `ext` (right-padded to T; zeros past each end), each
        computed once per key (prompt row, appended tokens)."""
        missing = [j for j, key in enumerate(keys) if key not in self._ext_cache]
        if missing:
            tokens, length = pad_right([ext[j] for j in missing], self.pad)
            acts = self.model.activations(tokens, self.hook)
            for i, j in enumerate(missing):
                self._ext_cache[keys[j]] = acts[i, :int(length[i])]
        width = max(len(e) for e in ext)
        out = torch.zeros(len(ext), width, self.x.shape[-1])
        for j, key in enumerate(keys):
            act = self._ext_cache[key]
            out[j, :len(act)] = act
        return out

    def _read(self, rows: np.ndarray, x: torch.Tensor, want: np.ndarray) -> np.ndarray:
        p, idx = self.prompts, torch.as_tensor(rows, dtype=torch.long)
        tokens, length, pos = p.tokens[idx], p.length[idx], p.position[idx]
        width = int(length.max())
        logits = self.model.logits(tokens[:, :width], self.hook, self._edit(pos, x),
                                   clean=self.clean[idx, :width])[torch.arange(len(rows)), length - 1].float()
        prefix: list[tuple[int, ...]] = [()] * len(rows)
        done: list[int | None] = [None] * len(rows)
        todo = list(range(len(rows)))
        while todo:
            for j, i in enumerate(todo):
                prefix[i], done[i] = self.answers.step(prefix[i], logits[j])
                if done[i] is None and not self.answers.starts(int(want[i]), prefix[i]):
                    done[i] = -1  # the wanted value is ruled out: no need to read on
            todo = [i for i in todo if done[i] is None]
            if not todo:
                break
            # values that share their first tokens: read the next one with the chosen tokens appended
            ext = [tokens[i, :int(length[i])].tolist() + list(prefix[i]) for i in todo]
            ext_tokens, ext_length = pad_right(ext, self.pad)
            clean = self._extended_clean(ext, [(int(rows[i]), prefix[i]) for i in todo])
            sub = torch.tensor(todo)
            logits = self.model.logits(ext_tokens, self.hook, self._edit(pos[sub], x[sub]), clean=clean).float()
            logits = logits[torch.arange(len(todo)), ext_length - 1]
        return np.array(done, dtype=int)
