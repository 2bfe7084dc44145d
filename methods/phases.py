"""Where an SAE training pass spends its time: wall seconds per phase of a step, summed over the pass.

A step is cut into consecutive laps (`lap(name)` closes the lap that began at the previous mark): encode (the
dense no-grad pre-activation matmul), select (which entries carry a gradient), activate (the selected values as a
function of the encoder, and the variant's activation), decode (reconstruction and MSE), aux (the variant's
extra loss terms), backward, project (the decoder gradient's radial part removed), adam, renorm (decoder rows back
to unit norm) and bookkeeping (dead-latent counters, logged scalars, resampling); the loop adds `data` (reading
and shuffling batches). On a CPU torch runs synchronously, so the time between two marks is the work between
them; on CUDA kernels run asynchronously and a lap would time the launch, not the work, so the trainer keeps no
laps there (`OFF`).
"""

from __future__ import annotations

import time

# The laps of one SAE step, in the order they run (`SAETraining.step`, `SAE.training_step`); the pass adds its own.
PHASES = ("encode", "select", "activate", "decode", "aux", "backward", "project", "adam", "renorm", "bookkeeping")
PASS_PHASES = ("data", "checkpoint")


class Laps:
    """Summed wall seconds per named lap: `mark()` starts a lap, `lap(name)` ends it and starts the next."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def mark(self) -> None:
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._last
        self._last = now


class _Off(Laps):
    """Keeps nothing (CUDA, or a caller that does not want laps)."""

    def mark(self) -> None:
        pass

    def lap(self, name: str) -> None:
        pass


OFF = _Off()
