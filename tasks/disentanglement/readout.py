"""Reading an attribute's answer from the subject model with the city's activation replaced.

The edited activation goes in at the city's last token at the hook; the first step runs only the layers after the
hook on the clean activations (`SubjectModel.logits(..., clean=)`), and the few rows whose answer needs a second
token (values sharing a first token) run again, full pass, with the chosen tokens appended and the same edit.
"""

from __future__ import annotations

import numpy as np
import torch

from tasks.disentanglement.cities import Answers, Prompts
from tasks.prompts import pad_right


class ModelReadout:
    """`(rows [P], x [P, d]) -> answers [P]` for the prompts `prompts` of one attribute, read by `answers`."""

    def __init__(self, model, hook: str, prompts: Prompts, clean: torch.Tensor, answers: Answers, pad: int,
                 batch: int = 64) -> None:
        self.model, self.hook, self.prompts, self.clean, self.answers = model, hook, prompts, clean, answers
        self.pad, self.batch = pad, batch
        self.x = clean[torch.arange(len(prompts.position)), prompts.position]  # `[N, d]` the city's activation

    def _edit(self, positions: torch.Tensor, x: torch.Tensor):
        def edit(act: torch.Tensor) -> torch.Tensor:
            act = act.clone()
            act[torch.arange(len(positions)), positions] = x.to(act)
            return act
        return edit

    def __call__(self, rows: np.ndarray, x: torch.Tensor) -> np.ndarray:
        out = np.empty(len(rows), dtype=int)
        for lo in range(0, len(rows), self.batch):
            out[lo:lo + self.batch] = self._read(np.asarray(rows[lo:lo + self.batch]), x[lo:lo + self.batch])
        return out

    def _read(self, rows: np.ndarray, x: torch.Tensor) -> np.ndarray:
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
            todo = [i for i in todo if done[i] is None]
            if not todo:
                break
            # values that share their first tokens: read the next one with the chosen tokens appended
            ext = [tokens[i, :int(length[i])].tolist() + list(prefix[i]) for i in todo]
            ext_tokens, ext_length = pad_right(ext, self.pad)
            sub = torch.tensor(todo)
            logits = self.model.logits(ext_tokens, self.hook, self._edit(pos[sub], x[sub])).float()
            logits = logits[torch.arange(len(todo)), ext_length - 1]
        return np.array(done, dtype=int)
