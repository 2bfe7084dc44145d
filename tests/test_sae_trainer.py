"""The shared trainer: a sweep trained in one pass equals separate runs; a killed run resumes to the same weights."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from bench.errors import BenchError
from methods.sae_batchtopk import SAEBatchTopK
from methods.sae_relu import SAEReLU
from methods.sae_topk import SAETopK
from methods.trainer import Checkpointing, train_saes

SMALL = dict(seed=3, dict_ratio=0.5, batch_size=64, epochs=1.0, warmup_steps=5)


def _same(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_one_pass_sweep_equals_separate_runs(store):
    sweep = [SAETopK(k=4, **SMALL), SAETopK(k=8, **SMALL), SAEReLU(l1_coeff=1e-2, **SMALL)]
    together = train_saes(sweep, store.train)
    assert all(m.fit_info_["trained_with"] == 3 for m in sweep)
    for method, joint in zip(sweep, together, strict=True):
        alone = train_saes([type(method)(**asdict(method))], store.train)[0]
        assert _same(joint, alone), method.name


def test_step_phases_account_for_the_pass(store):
    """Every phase of a step is timed (methods.phases): the laps of the SAEs and of the pass add up to the pass's
    wall time, less only the set-up before the first batch and the loop's own few instructions."""
    import time

    from methods.phases import PASS_PHASES, PHASES

    sweep = [SAETopK(k=4, **SMALL), SAEReLU(l1_coeff=1e-2, **SMALL)]
    start = time.perf_counter()
    train_saes(sweep, store.train, workers=1)  # one worker: the SAEs' laps follow each other in time
    wall = time.perf_counter() - start
    steps = sweep[0].fit_info_["steps"]
    laps = [m.timing_["step_seconds"] for m in sweep] + [sweep[0].timing_["pass_seconds"]]
    assert not {"step_seconds", "pass_seconds"} & set(sweep[0].fit_info_)  # results copy fit_info: no timings there
    assert set(laps[0]) == set(laps[1]) == set(PHASES) and set(laps[2]) == set(PASS_PHASES)
    assert all(v >= 0 for lap in laps for v in lap.values()) and steps > 10
    timed = sum(v for lap in laps for v in lap.values())
    assert 0.5 * wall < timed <= wall + 0.01 * len(laps) * len(PHASES)  # rounding to ms


def test_workers_train_the_weights_one_thread_trains(store):
    """Two workers stepping SAEs side by side give bit for bit the weights of one thread stepping them in turn."""
    def sweep():
        return [SAETopK(k=4, **SMALL), SAEReLU(l1_coeff=1e-2, **SMALL), SAEBatchTopK(k=4, **SMALL)]

    threads = torch.get_num_threads()
    alone = train_saes(sweep(), store.train, workers=1)
    assert torch.get_num_threads() == threads  # the caller's thread count is restored
    for a, b in zip(alone, train_saes(sweep(), store.train, workers=2), strict=True):
        assert _same(a, b)


def test_groups_must_share_their_batches(store):
    with pytest.raises(ValueError):
        train_saes([SAETopK(**SMALL), SAETopK(**{**SMALL, "batch_size": 32})], store.train)


class _Killed(Exception):
    pass


def test_killed_training_resumes_to_the_same_weights(store, tmp_path):
    def methods():
        return [SAEBatchTopK(k=4, **SMALL), SAEReLU(l1_coeff=1e-2, dead_latents="resample", resample_every=7,
                                                    dead_after_tokens=64, **SMALL)]

    reference_methods = methods()
    reference = train_saes(reference_methods, store.train)
    assert reference_methods[1].fit_info_["resampled"] > 0  # the resumed state includes resampling
    ckpt = Checkpointing(tmp_path / "ckpt", every_steps=5)

    def kill_at_12(done: int, total: int) -> None:
        if done == 12:
            raise _Killed

    with pytest.raises(_Killed):
        train_saes(methods(), store.train, kill_at_12, ckpt)
    assert (ckpt.directory / "step-10").is_dir()  # the last checkpoint before the kill

    seen = []
    resumed = train_saes(methods(), store.train, lambda d, t: seen.append(d), ckpt)
    assert seen[0] == 11  # steps 1-10 were not redone
    for a, b in zip(reference, resumed, strict=True):
        assert _same(a, b)
    assert not ckpt.directory.exists()  # a finished training leaves no checkpoint behind


def test_checkpoint_of_other_settings_is_refused(store, tmp_path):
    ckpt = Checkpointing(tmp_path / "ckpt", every_steps=3)

    def stop(done: int, total: int) -> None:
        if done == 4:
            raise _Killed

    with pytest.raises(_Killed):
        train_saes([SAETopK(k=4, **SMALL)], store.train, stop, ckpt)
    with pytest.raises(BenchError, match="other settings"):
        train_saes([SAETopK(k=5, **SMALL)], store.train, None, ckpt)


# --- a corrupt checkpoint is a one-line error; anything else surfaces as itself ------------------------------------
def _interrupted_checkpoint(tmp_path):
    """A real checkpoint of a killed training on small random data (step 5 of 31), and how to resume it."""
    from bench.store import ArraySplit

    data = ArraySplit(torch.randn(2000, 16, generator=torch.Generator().manual_seed(0)))
    ckpt = Checkpointing(tmp_path / "ckpt", every_steps=5)

    def stop(done: int, total: int) -> None:
        if done == 7:
            raise _Killed

    with pytest.raises(_Killed):
        train_saes([SAETopK(k=4, **SMALL)], data, stop, ckpt)
    return ckpt.directory / "step-5" / "sae-0.safetensors", lambda: train_saes([SAETopK(k=4, **SMALL)], data, None,
                                                                               ckpt)


def test_truncated_checkpoint_is_a_one_line_error(tmp_path):
    path, resume = _interrupted_checkpoint(tmp_path)
    path.write_bytes(path.read_bytes()[:-64])
    with pytest.raises(BenchError, match=r"cannot resume from checkpoint \(SafetensorError.*delete it") as e:
        resume()
    assert "\n" not in str(e.value)


def test_checkpoint_with_a_wrong_shape_is_a_one_line_error(tmp_path):
    from safetensors.torch import load_file, save_file

    path, resume = _interrupted_checkpoint(tmp_path)
    tensors = load_file(str(path))
    save_file({**tensors, "model.W_dec": tensors["model.W_dec"][:, :-1].contiguous()}, str(path))
    with pytest.raises(BenchError, match=r"cannot resume from checkpoint \(RuntimeError: .*size mismatch") as e:
        resume()
    assert "\n" not in str(e.value)
    moments = [k for k in tensors if k.endswith(".exp_avg")]  # Adam's state, which torch does not check itself
    save_file({**tensors, moments[0]: tensors[moments[0]][:1].contiguous()}, str(path))
    with pytest.raises(BenchError, match=r"ValueError: opt\.\d\.exp_avg is \["):
        resume()
    (path.parents[1] / "trainer.json").write_text("{")
    with pytest.raises(BenchError, match="JSONDecodeError"):
        resume()


def test_a_bug_while_resuming_is_not_reported_as_a_corrupt_checkpoint(tmp_path, monkeypatch):
    from methods.trainer import SAETraining

    _, resume = _interrupted_checkpoint(tmp_path)

    def broken(self, tensors, scalars):
        raise torch.OutOfMemoryError("CUDA out of memory")  # a RuntimeError, like a shape mismatch

    monkeypatch.setattr(SAETraining, "restore", broken)
    with pytest.raises(torch.OutOfMemoryError):
        resume()
    monkeypatch.setattr(SAETraining, "restore", lambda self, tensors, scalars: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        resume()
