"""cpu_kernels: each compiled kernel against torch ops (values, gradients, edge cases); dropout
drops with probability p, reproducibly from the seed, whatever the thread count.
tests/test_model.py compares the two paths of the whole model end to end."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from model import attention
from speed import cpu_kernels
from speed.cpu_kernels import (
    _LANES,
    _add_norm_cpu,
    _add_relu_cpu,
    _attention_inference_cpu,
    _AttentionCPU,
    _exp_nonpositive,
    _kept,
)
from tests.conftest import REPO, without_write_override


def test_dropout_drops_with_probability_p_and_keeps_the_expectation():
    torch.manual_seed(0)
    x = torch.ones(4_000_001)  # odd size: the last 64-bit draw is used for one element
    for p in (0.1, 0.3, 0.5):
        y = cpu_kernels.dropout(x, p)
        dropped = (y == 0).double().mean().item()
        assert abs(dropped - p) < 5 * (p * (1 - p) / len(x)) ** 0.5
        assert torch.allclose(y[y != 0], torch.tensor(1 / (1 - p)))
    first = cpu_kernels.dropout(torch.ones(1000, 2), 0.3)  # the two halves of a draw are independent
    assert 0.05 < ((first[:, 0] == 0) & (first[:, 1] == 0)).double().mean() < 0.15


def test_dropout_masks_are_reproducible_from_the_seed():
    torch.manual_seed(5)
    a = cpu_kernels.dropout(torch.ones(1000), 0.3)
    torch.manual_seed(5)
    b = cpu_kernels.dropout(torch.ones(1000), 0.3)
    torch.manual_seed(6)
    other = cpu_kernels.dropout(torch.ones(1000), 0.3)
    assert torch.equal(a, b) and not torch.equal(a, other)


def test_dropout_of_relu_is_one_pass_of_the_same_function_with_the_same_gradient():
    x = torch.randn(3001, dtype=torch.float32, requires_grad=True)  # odd: the last draw decides one element
    torch.manual_seed(7)
    fused = cpu_kernels.dropout(x, 0.3, relu=True)
    fused.backward(torch.arange(3001.0))
    fused_grad, x.grad = x.grad, None
    torch.manual_seed(7)
    plain = cpu_kernels.dropout(torch.relu(x), 0.3)
    plain.backward(torch.arange(3001.0))
    assert torch.equal(fused, plain) and torch.equal(fused_grad, x.grad)
    assert (fused[x <= 0] == 0).all() and (fused > 0).any()


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="one numba thread: nothing to compare")
def test_dropout_masks_do_not_depend_on_the_number_of_threads():
    masks = []
    for threads in (1, 2):
        numba.set_num_threads(threads)
        assert numba.get_num_threads() == threads
        torch.manual_seed(3)
        masks.append(cpu_kernels.dropout(torch.ones(100_001), 0.3))
    assert torch.equal(*masks)


def attention_reference(qkv, padding, keep):
    """Attention in plain torch ops with a given dropout multiplier keep (B, heads, Tq, Tk)."""
    batch, length = padding.shape
    query, key, value = qkv.view(batch, length, 3, 8, 4).permute(2, 0, 3, 1, 4)
    scores = query @ key.transpose(-2, -1) / 2.0 + torch.where(padding, float("-inf"), 0.0)[:, None, None, :]
    return ((torch.softmax(scores, dim=-1) * keep) @ value).transpose(1, 2).reshape(batch, length, 32)


def test_compiled_attention_is_attention_with_dropout_in_value_and_gradient():
    """_AttentionCPU against torch ops: without dropout (as model.attention's torch path
    computes it) and with the mask that _kept draws for each (b, h, query, key)."""
    torch.manual_seed(0)
    batch, length, p, seed = 6, 7, 0.3, 12345
    qkv = torch.randn(batch, length, 96, requires_grad=True)
    padding = torch.zeros(batch, length, dtype=torch.bool)
    padding[:, 3:5] = True
    padding[2, :6] = True  # only the last token is real
    grad_out = torch.randn(batch, length, 32)
    threshold = round(p * 2**31)
    keep = torch.tensor([[[[_kept(seed, ((b * 8 + h) * length + i) * length + j, threshold) / (1 - p)
                            for j in range(length)] for i in range(length)] for h in range(8)]
                         for b in range(batch)], dtype=torch.float32)
    assert 0.2 < (keep == 0).float().mean() < 0.4
    for p_, keep_ in ((0.0, torch.ones_like(keep)), (p, keep)):
        ours = _AttentionCPU.apply(qkv, (~padding).to(torch.uint8), 8, p_, seed)
        reference = attention_reference(qkv, padding, keep_)
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
        if p_ == 0.0:
            torch.testing.assert_close(attention(qkv, padding, 8, 0.0, compiled=False), reference,
                                       rtol=1e-5, atol=1e-5)
        ours_grad, = torch.autograd.grad(ours, qkv, grad_out)
        reference_grad, = torch.autograd.grad(reference, qkv, grad_out)
        torch.testing.assert_close(ours_grad, reference_grad, rtol=1e-4, atol=1e-5)


def repeated_token_batch(length: int, batch: int = 24):
    """qkv (batch, length, 96) of histories that repeat a few tokens (history_repeats: an item once
    per purchase), so keys tie exactly, with large scores (rows near one-hot); ~30% padded keys,
    never the last. Sequence 0 is one token repeated, sequence 1 has only its last key real."""
    generator = torch.Generator().manual_seed(length)
    tokens = torch.randn(batch, max(1, length // 3), 32, generator=generator)
    pick = torch.randint(0, tokens.shape[1], (batch, length), generator=generator)
    pick[0] = 0
    x = torch.gather(tokens, 1, pick[..., None].expand(-1, -1, 32))
    qkv = x @ (torch.randn(96, 32, generator=generator) * 8 / 32**0.5).T + 0.1 * torch.randn(96, generator=generator)
    padding = torch.rand(batch, length, generator=generator) < 0.3
    padding[:, -1] = False
    padding[1, :-1] = True
    return qkv, padding, torch.randn(batch, length, 32, generator=generator)


@pytest.mark.parametrize("length", [1, 2, 3, 11, 12, 16, 17, 33, 51])
def test_compiled_attention_is_attention_on_repeated_tokens(length: int):
    """_AttentionCPU (dropout 0), value and gradient, against torch's attention in float64: no
    further from it than torch's in float32 is, on widths that are and are not multiples of 16.
    Where one key is real, its probability is exactly 1, so the output is that key's value and
    the queries' and keys' gradient 0, exactly, as in torch (with approximate reciprocals the
    kernel saved 1 - 2^-24, and its backward, which assumes probabilities summing to 1, left
    1e-7 * |grad of the probabilities| there)."""
    qkv, padding, grad_out = repeated_token_batch(length)
    results = {}
    for name, dtype in (("ours", torch.float32), ("torch", torch.float32), ("exact", torch.float64)):
        x = qkv.to(dtype).requires_grad_()
        if name == "ours":
            out = _AttentionCPU.apply(x, (~padding).to(torch.uint8), 8, 0.0, 0)
        else:
            out = attention(x, padding, 8, 0.0, compiled=False)
        results[name] = out.detach().double(), torch.autograd.grad(out, x, grad_out.to(dtype))[0].double()
    for k, kind in enumerate(("value", "gradient")):
        exact = results["exact"][k]
        ours, torch_error = (results["ours"][k] - exact).abs().max(), (results["torch"][k] - exact).abs().max()
        assert ours <= 1.5 * torch_error + 1e-6 * exact.abs().max(), (kind, float(ours), float(torch_error))
    out, grad = (r.float() for r in results["ours"])
    assert torch.equal(out[1], qkv[1, -1:, 64:].expand(length, -1))
    assert torch.equal(grad[1, :, :64], torch.zeros(length, 64))


def test_evaluation_attention_kernel_with_one_real_key_returns_its_value():
    """As in training (above): where one key is real, the output is exactly its value."""
    for length in (1, 2, 11, 20):
        qkv, padding, _ = repeated_token_batch(length, batch=37)
        out = torch.empty(37, length, 32)
        _attention_inference_cpu(qkv.numpy(), torch.zeros(96).numpy(), (~padding).to(torch.uint8).numpy(), 8,
                                 out.numpy(), _LANES)
        torch.testing.assert_close(out, attention(qkv.double(), padding, 8, 0.0, compiled=False).float(),
                                   rtol=1e-5, atol=1e-4)
        assert torch.equal(out[1], qkv[1, -1:, 64:].expand(length, -1))


@pytest.mark.parametrize("length", [1, 2, 7, 11, 20, 21])
def test_evaluation_attention_kernel_is_attention(length: int):
    """_attention_inference_cpu, which works on 16 sequences at once and adds in_proj's bias,
    against torch ops and _AttentionCPU, on a batch that is not a multiple of 16, with padded
    keys."""
    torch.manual_seed(length)
    batch = 37
    qkv = torch.randn(batch, length, 96)
    padding = torch.rand(batch, length) < 0.3
    padding[:, -1] = False  # the candidate is never padding
    out = torch.empty(batch, length, 32)
    bias = torch.randn(96)
    _attention_inference_cpu((qkv - bias).numpy(), bias.numpy(), (~padding).to(torch.uint8).numpy(), 8,
                             out.numpy(), _LANES)
    torch.testing.assert_close(out, attention(qkv, padding, 8, 0.0, compiled=False), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, _AttentionCPU.apply(qkv, (~padding).to(torch.uint8), 8, 0.0, 0),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("width", [32, 20])
def test_evaluation_add_norm_and_add_relu_kernels_are_their_torch_ops(width: int):
    """The fused evaluation steps, on a width that is and one that is not a multiple of 16."""
    torch.manual_seed(width)
    y, residual = torch.randn(101, width), torch.randn(101, width)
    bias, weight, shift = torch.randn(width), torch.randn(width), torch.randn(width)
    expected = F.layer_norm(y + bias + residual, (width,), weight, shift, eps=1e-5)
    _add_norm_cpu(y.numpy(), bias.numpy(), residual.numpy(), weight.numpy(), shift.numpy(), 1e-5)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    expected = torch.relu(y + bias)
    _add_relu_cpu(y.numpy(), bias.numpy())
    torch.testing.assert_close(y, expected)


def test_the_vectorized_exponential_is_float32_accurate():
    x = np.concatenate([np.linspace(-87.0, 0.0, 1031), [-1e-8, -0.5 * np.log(2.0)]]).astype(np.float32)
    ours = np.array([_exp_nonpositive(v) for v in x])
    exact = np.exp(x.astype(np.float64))
    assert (np.abs(ours - exact) / exact).max() < 5e-7
    assert _exp_nonpositive(np.float32(-1e30)) < 2e-38  # e^-87: nothing next to a softmax's max, 1


def read_only_copy(tmp_path: Path) -> Path:
    """The repository's source files in a folder nobody may write to (a shared install)."""
    copy = tmp_path / "install"
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(".git", "__pycache__", "data", "log", "results"))
    for path in [copy, *copy.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    return copy


@pytest.mark.slow
def test_a_read_only_install_with_an_unwritable_home_compiles_the_kernels_without_a_cache(tmp_path):
    install = read_only_copy(tmp_path)
    home = tmp_path / "home"
    home.mkdir(mode=0o555)
    env = {**os.environ, "HOME": str(home), "OMP_NUM_THREADS": "1"}
    env.pop("NUMBA_CACHE_DIR", None)
    env.pop("XDG_CACHE_HOME", None)
    try:
        probe = subprocess.run(["touch", str(install / "probe")], preexec_fn=without_write_override,
                               capture_output=True)
        assert probe.returncode != 0, "the copy is writable: the test would prove nothing"
        help_run = subprocess.run([sys.executable, "train_model.py", "--help"], cwd=install, env=env,
                                  preexec_fn=without_write_override, capture_output=True, text=True, timeout=300)
        assert help_run.returncode == 0, help_run.stderr[-2000:]
        assert "--fast_kernels" in help_run.stdout
        kernel_run = subprocess.run(
            [sys.executable, "-c", "import torch; from speed import cpu_kernels; torch.manual_seed(0); "
             "print(int((cpu_kernels.dropout(torch.ones(1000), 0.5) == 0).sum()))"],
            cwd=install, env=env, preexec_fn=without_write_override, capture_output=True, text=True, timeout=300)
        assert kernel_run.returncode == 0, kernel_run.stderr[-2000:]
        assert 400 < int(kernel_run.stdout) < 600
        assert not list(install.rglob("*.nbi")) and not list(home.iterdir())
    finally:
        for path in [install, *install.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
