"""The compiled CPU kernels of ACMR's encoder (numba), used when `fast_kernels` is on (config.py)
and the tensors are on the CPU; model.py is the same model in plain torch, the reference.

Why: on CPU torch runs this small model (hidden 32, head size 4, ~10 tokens per sequence) as
many short passes over memory, and its dropout draws one Mersenne Twister number per element
(~9 ns each on a 2-core AMD EPYC): dropout alone was half of a training step. Here:

- `dropout`: one pass that draws the random bits (a counter-based SplitMix64, seeded for each
  call by one draw of torch's generator) and writes the result and the mask, the ReLU before
  the feed-forward dropout included.
- `attention`: scores, softmax, dropout of the probabilities and the weighted sum, forward and
  backward, one pass per (sequence, head) that stays in cache; the queries are padded to 16 so
  that many short softmax rows vectorize at once, the exponential is a range-reduced polynomial
  that vectorizes, and the backward redraws the dropout mask instead of storing it.
- `encoder_layer_inference`: a whole encoder layer at evaluation (no autograd): an attention
  kernel that works on 16 sequences at once, one per vector lane, for short sequences, and the
  layers' biases, ReLU, residuals and layer norms as compiled passes written in place.

Measured on this project's 2-core AVX-512 virtual machine (docs/SPEED.md, results/bench): a `uk`
pre-training epoch 60.8 s against ~1570 s for the authors' way (nn.TransformerEncoder, every
history padded to 50 slots; part of the gain is the trimming of batches, done on every path),
a `uk` validation pass 3.8 s.

What differs from model.py's torch ops: float rounding (to ~1e-6 relative; the exponential is
within 3e-7) and the dropout masks, which come from the generator here and not from torch's:
the same distribution and, for a seed, other masks, so a run with dropout gives other (equally
valid) numbers on the two paths. tests/test_model.py compares the two paths end to end.
Every kernel keeps the order of its sums fixed (`_NO_REASSOCIATION`), so a seeded run gives the
same bits in every process, with or without numba's cache.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from llvmlite import ir
from numba import njit, prange
from numba.core import types
from numba.extending import intrinsic
from torch import nn


def _compiled(**options: object) -> Callable[[Callable], Callable]:
    """njit(**options) with numba's on-disk cache where one can be written (numba tries
    $NUMBA_CACHE_DIR, __pycache__ next to this file, then ~/.cache/numba), else without one: a
    read-only install with an unwritable HOME then compiles the kernels in every process."""
    def compile_function(function: Callable) -> Callable:
        try:
            return njit(cache=True, **options)(function)
        except RuntimeError as error:  # numba: "cannot cache function ...: no locator available ..."
            if "no locator available" not in str(error):
                raise
            return njit(**options)(function)
    return compile_function


# ---------------------------------------------------------------- dropout

@njit(inline="always")
def _splitmix64(seed: int, counter: int) -> int:
    """SplitMix64's output for `counter` from `seed`: the random bits of every dropout mask."""
    z = np.uint64(seed) + np.uint64(counter) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(inline="always")
def _kept(seed: int, index: int, threshold: int) -> bool:
    """Whether dropout keeps element `index` of a call seeded with `seed` (31 bits >= threshold)."""
    return (_splitmix64(seed, index) & np.uint64(0x7FFFFFFF)) >= np.uint64(threshold)


@_compiled(parallel=True, fastmath=True)
def _dropout_cpu(x: np.ndarray, seed: int, threshold: int, scale: float, relu: bool,
                 out: np.ndarray, mask: np.ndarray) -> None:
    """out = x * mask, mask = scale or 0 per element (flat arrays; with relu also 0 where
    x <= 0). Elements 2j and 2j + 1 take the low and high 31 bits of SplitMix64's output for
    counter j from `seed`, kept where they are >= threshold: a mask depends on the seed
    alone, not on the number of threads."""
    n, chunks = x.shape[0], 16
    pairs = (n + 1) // 2
    per_chunk = (pairs + chunks - 1) // chunks
    for chunk in prange(chunks):
        for j in range(chunk * per_chunk, min(pairs, (chunk + 1) * per_chunk)):
            z = _splitmix64(seed, j)
            low = scale * ((z & np.uint64(0x7FFFFFFF)) >= np.uint64(threshold))
            high = scale * (((z >> np.uint64(32)) & np.uint64(0x7FFFFFFF)) >= np.uint64(threshold))
            i = 2 * j
            if relu:
                low *= x[i] > 0
                high *= i + 1 < n and x[i + 1] > 0
            mask[i], out[i] = low, x[i] * low
            if i + 1 < n:  # n odd: the last output decides one element
                mask[i + 1], out[i + 1] = high, x[i + 1] * high


class _DropoutCPU(torch.autograd.Function):
    """Dropout (of relu(x) with `relu`) in one pass over x (`_dropout_cpu`); the backward
    multiplies by the saved mask."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float, seed: int, relu: bool) -> torch.Tensor:
        x = x.detach().contiguous()
        out, mask = torch.empty_like(x), torch.empty_like(x)
        _dropout_cpu(x.view(-1).numpy(), seed, round(p * 2**31), x.new_tensor(1 / (1 - p)).numpy()[()],
                     relu, out.view(-1).numpy(), mask.view(-1).numpy())
        ctx.save_for_backward(mask)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (mask,) = ctx.saved_tensors
        return grad * mask, None, None, None


def dropout(x: torch.Tensor, p: float, relu: bool = False) -> torch.Tensor:
    """Inverted dropout in training (0 < p < 1) of x, or of relu(x) with `relu`, in one pass.
    The pass is seeded by one draw of torch's generator, so `torch.manual_seed` fixes every
    mask and a checkpoint of torch's generator state resumes them; a mask depends on the seed
    alone, not on the number of threads. Each 64-bit output of SplitMix64 decides two elements:
    its two 32-bit halves, each cut to 31 uniform bits, are compared with round(p * 2^31), so
    the drop probability is p to within 5e-10."""
    return _DropoutCPU.apply(x, p, int(torch.randint(2**63 - 1, ())), relu)


# ---------------------------------------------------------------- attention (training)

@intrinsic
def _float_from_bits(typingctx, bits):
    """The float32 whose bits are the int32 `bits` (a bit cast, for `_exp_nonpositive`)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


@njit(fastmath=True, inline="always")
def _exp_nonpositive(x: float) -> float:
    """e^x for float32 x <= 0, to within 3e-7 relative (e^-87 below -87): range reduction
    x = n ln2 + r and a degree-6 polynomial, which vectorizes (numba's math.exp is a scalar
    call here, ~4 ns each)."""
    x = max(x, np.float32(-87.0))
    n = math.floor(x * np.float32(1.44269504) + np.float32(0.5))
    r = x - n * np.float32(0.693145751953125) - n * np.float32(1.42860677e-06)
    p = np.float32(1.0) + r * (np.float32(1.0) + r * (np.float32(0.5) + r * (np.float32(1 / 6) + r * (
        np.float32(1 / 24) + r * (np.float32(1 / 120) + r * np.float32(1 / 720))))))
    return p * _float_from_bits(np.int32(n + np.float32(127.0)) << np.int32(23))


# fast-math without reassociation for the attention kernels: their sums keep the written order,
# so every process computes the same bits. With reassociation, a kernel compiled in the process
# and the same kernel loaded from numba's cache summed in different orders, and a resumed run
# drifted from an uninterrupted one in the last bits (tests/test_resume.py).
# Nor "arcp" (approximate reciprocals): with it, LLVM computes a softmax's 1 / total as a
# reciprocal estimate (vrcp14ps) and one Newton step, 1 - 2^-24 for a total of 1, so the saved
# probabilities of a row summed to 1 - 1e-7 instead of 1 to rounding (at every width but
# 49-64 tokens, whose 64 query slots the compiled loop divided exactly). The backward,
# p * (dp - sum p dp), assumes they sum to 1: where dp is the same at every key (one real key, or
# a history of one repeated item: equal keys and values) the true gradient of the queries and
# keys is 0, and the kernel gave 1e-7 * dp * |key| instead (1e-5 of the largest gradient on
# large scores, several times torch's error). An exact division costs nothing measurable here
# (one per query, beside head size x keys multiply-adds).
_NO_REASSOCIATION = {"nnan", "ninf", "nsz", "contract", "afn"}


@njit(inline="always")
def _gather_head(source, b, offset, head_size, target) -> None:
    """target[d, j] = source[b, j, offset + d] for the T tokens j (target: (head_size, slots))."""
    for j in range(source.shape[1]):
        for d in range(head_size):
            target[d, j] = source[b, j, offset + d]


_CHUNKS = 64  # work units of an attention kernel's parallel loop


@njit(inline="always")
def _attention_sizes(qkv, num_heads: int) -> tuple:
    """(T, H, head size, 1/sqrt(head size), slots = T rounded up to 16, (sequence, head) items,
    items per chunk) of a qkv array (B, T, 3H)."""
    length, hidden = qkv.shape[1], qkv.shape[2] // 3
    head_size = hidden // num_heads
    items = qkv.shape[0] * num_heads
    return (length, hidden, head_size, np.float32(1.0 / math.sqrt(head_size)), (length + 15) // 16 * 16,
            items, (items + _CHUNKS - 1) // _CHUNKS)


@njit(inline="always")
def _gather_qkv(qkv, b, h, head_size, query, keys, values) -> None:
    """Head h of sequence b's queries, keys and values as (head_size, slots) arrays."""
    hidden = qkv.shape[2] // 3
    _gather_head(qkv, b, h * head_size, head_size, query)
    _gather_head(qkv, b, hidden + h * head_size, head_size, keys)
    _gather_head(qkv, b, 2 * hidden + h * head_size, head_size, values)


@_compiled(parallel=True, fastmath=_NO_REASSOCIATION)
def _attention_cpu(qkv: np.ndarray, key_real: np.ndarray, num_heads: int, seed: int, threshold: int,
                   drop_scale: float, out: np.ndarray, probabilities: np.ndarray, save: bool) -> None:
    """Multi-head attention, one (sequence, head) at a time, all in cache. qkv (B, T, 3H): the
    queries, keys and values from `in_proj`; key_real (B, T): 1 for real keys; out (B, T, H).
    With `save`, the probabilities go to `probabilities` (B, heads, key, query), 0 at padded
    keys. Dropout (threshold > 0) keeps element (b, h, query i, key j) where
    _kept(seed, ((b * heads + h) * T + i) * T + j) and scales it by drop_scale.
    Every loop runs over the queries, padded to `slots` (a multiple of 16), so that it
    vectorizes and many short rows are worked on at once."""
    length, _, head_size, scale, slots, items, per_chunk = _attention_sizes(qkv, num_heads)
    for chunk in prange(_CHUNKS):
        query, keys = np.zeros((head_size, slots), np.float32), np.zeros((head_size, slots), np.float32)
        values, attended = np.zeros((head_size, slots), np.float32), np.zeros((head_size, slots), np.float32)
        weights = np.zeros((length, slots), np.float32)  # (key, query)
        top, total = np.zeros(slots, np.float32), np.zeros(slots, np.float32)
        for item in range(chunk * per_chunk, min(items, (chunk + 1) * per_chunk)):
            b, h = item // num_heads, item % num_heads
            _gather_qkv(qkv, b, h, head_size, query, keys, values)
            top[:] = -3.0e38
            for j in range(length):
                weights[j, :] = 0.0
                for d in range(head_size):
                    key = keys[d, j]
                    for i in range(slots):
                        weights[j, i] += key * query[d, i]
                if key_real[b, j]:
                    for i in range(slots):
                        top[i] = max(top[i], weights[j, i])
            total[:] = 0.0
            for j in range(length):
                real = np.float32(key_real[b, j])
                for i in range(slots):
                    weights[j, i] = _exp_nonpositive(min((weights[j, i] - top[i]) * scale, 0.0)) * real
                    total[i] += weights[j, i]
            for i in range(slots):
                total[i] = np.float32(1.0) / total[i]
            attended[:] = 0.0
            for j in range(length):
                for i in range(slots):
                    weights[j, i] *= total[i]
                if save:
                    probabilities[b, h, j, :] = weights[j, :length]
                if threshold > 0:
                    first = item * length * length + j
                    for i in range(slots):
                        weights[j, i] *= drop_scale * _kept(seed, first + i * length, threshold)
                for d in range(head_size):
                    value = values[d, j]
                    for i in range(slots):
                        attended[d, i] += weights[j, i] * value
            for i in range(length):
                for d in range(head_size):
                    out[b, i, h * head_size + d] = attended[d, i]


@_compiled(parallel=True, fastmath=_NO_REASSOCIATION)
def _attention_backward_cpu(qkv: np.ndarray, key_real: np.ndarray, num_heads: int, seed: int,
                            threshold: int, drop_scale: float, probabilities: np.ndarray,
                            grad_out: np.ndarray, grad_qkv: np.ndarray) -> None:
    """The gradient of `_attention_cpu` with respect to qkv, from its saved probabilities; the
    dropout mask is drawn again from the seed. Loops over the queries, as there; the sums over
    the queries (the keys' and values' gradients) run over the keys instead, on transposed
    copies, so that no loop reduces into one number."""
    length, hidden, head_size, scale, slots, items, per_chunk = _attention_sizes(qkv, num_heads)
    for chunk in prange(_CHUNKS):
        query, keys = np.zeros((head_size, slots), np.float32), np.zeros((head_size, slots), np.float32)
        values, grad_attended = np.zeros((head_size, slots), np.float32), np.zeros((head_size, slots), np.float32)
        grad_query = np.zeros((head_size, slots), np.float32)
        grad_keys, grad_values = np.zeros((head_size, slots), np.float32), np.zeros((head_size, slots), np.float32)
        probability, grad_scores = np.zeros((length, slots), np.float32), np.zeros((length, slots), np.float32)
        dropped = np.zeros((length, slots), np.float32)  # (key, query): the probabilities after dropout
        dropped_t, grad_scores_t = np.zeros((length, slots), np.float32), np.zeros((length, slots), np.float32)
        mask, row_dot = np.ones(slots, np.float32), np.zeros(slots, np.float32)
        for item in range(chunk * per_chunk, min(items, (chunk + 1) * per_chunk)):
            b, h = item // num_heads, item % num_heads
            _gather_qkv(qkv, b, h, head_size, query, keys, values)
            _gather_head(grad_out, b, h * head_size, head_size, grad_attended)
            row_dot[:] = 0.0
            for j in range(length):
                probability[j, :length] = probabilities[b, h, j, :]
                if threshold > 0:
                    first = item * length * length + j
                    for i in range(slots):
                        mask[i] = drop_scale * _kept(seed, first + i * length, threshold)
                grad_scores[j, :] = 0.0  # here the gradient of the probabilities
                for d in range(head_size):
                    value = values[d, j]
                    for i in range(slots):
                        grad_scores[j, i] += value * grad_attended[d, i]
                for i in range(slots):
                    dropped[j, i] = probability[j, i] * mask[i]
                    grad_scores[j, i] *= mask[i]
                    row_dot[i] += probability[j, i] * grad_scores[j, i]
            grad_query[:] = 0.0
            for j in range(length):
                for i in range(slots):
                    grad_scores[j, i] = probability[j, i] * (grad_scores[j, i] - row_dot[i]) * scale
                for d in range(head_size):
                    key = keys[d, j]
                    for i in range(slots):
                        grad_query[d, i] += grad_scores[j, i] * key
            for j in range(length):  # (query, key) copies
                for i in range(length):
                    dropped_t[i, j], grad_scores_t[i, j] = dropped[j, i], grad_scores[j, i]
            grad_keys[:] = 0.0
            grad_values[:] = 0.0
            for i in range(length):
                for d in range(head_size):
                    grad, q = grad_attended[d, i], query[d, i]
                    for j in range(slots):
                        grad_values[d, j] += dropped_t[i, j] * grad
                        grad_keys[d, j] += grad_scores_t[i, j] * q
            for j in range(length):
                for d in range(head_size):
                    grad_qkv[b, j, h * head_size + d] = grad_query[d, j]
                    grad_qkv[b, j, hidden + h * head_size + d] = grad_keys[d, j]
                    grad_qkv[b, j, 2 * hidden + h * head_size + d] = grad_values[d, j]


class _AttentionCPU(torch.autograd.Function):
    """Multi-head attention with dropout on the probabilities, from `in_proj`'s output to the
    heads' concatenated outputs, in one compiled pass forward (`_attention_cpu`) and one
    backward (`_attention_backward_cpu`)."""

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, key_real: torch.Tensor, num_heads: int, p: float, seed: int) -> torch.Tensor:
        qkv = qkv.detach().contiguous()
        batch, length = qkv.shape[:2]
        out = qkv.new_empty(batch, length, qkv.shape[2] // 3)
        save = ctx.needs_input_grad[0]
        probabilities = qkv.new_empty((batch, num_heads, length, length) if save else (1, 1, 1, 1))
        threshold, drop_scale = round(p * 2**31), qkv.new_tensor(1 / (1 - p)).numpy()[()]
        _attention_cpu(qkv.numpy(), key_real.numpy(), num_heads, seed, threshold, drop_scale,
                       out.numpy(), probabilities.numpy(), save)
        if save:
            ctx.save_for_backward(qkv, key_real, probabilities)
            ctx.settings = num_heads, seed, threshold, drop_scale
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        qkv, key_real, probabilities = ctx.saved_tensors
        grad_qkv = torch.empty_like(qkv)
        _attention_backward_cpu(qkv.numpy(), key_real.numpy(), *ctx.settings, probabilities.numpy(),
                                grad_out.contiguous().numpy(), grad_qkv.numpy())
        return grad_qkv, None, None, None, None


def attention(qkv: torch.Tensor, padding: torch.Tensor, num_heads: int, p: float) -> torch.Tensor:
    """model.attention on CPU: qkv (B, T, 3H) from `in_proj`, padding (B, T) True at padded
    keys, p the dropout of the probabilities (0 at evaluation); the heads' outputs (B, T, H).
    With p > 0 the kernel's seed is one draw of torch's generator (see `dropout`)."""
    seed = int(torch.randint(2**63 - 1, ())) if p > 0.0 else 0
    return _AttentionCPU.apply(qkv, (~padding).to(torch.uint8), num_heads, p, seed)


# ---------------------------------------------------------------- a layer at evaluation

_LANES = 16  # sequences per vector in `_attention_inference_cpu` (16 float32 = one AVX-512 register)
_LANE_KERNEL_MAX_TOKENS = 20  # longer evaluation sequences go to `_attention_cpu` (encoder_layer_inference)


@_compiled(parallel=True, fastmath=_NO_REASSOCIATION)
def _attention_inference_cpu(qkv: np.ndarray, bias: np.ndarray, key_real: np.ndarray, num_heads: int,
                             out: np.ndarray, width: int) -> None:
    """`_attention_cpu` without dropout and without saving anything, for evaluation: the same
    steps (results agree to float32 rounding), but every loop runs over 16 sequences at once
    instead of over the queries of one sequence. Evaluation batches hold sequences of one
    length, often short (a user with one training item gives 2 tokens), which the other kernel
    pads to 16 queries; here no lane is wasted except in the last block of a batch. Each block
    of 16 sequences is first copied to (feature, token, sequence) order, and `in_proj`'s bias
    (3H,) added on the way: qkv is `in_proj`'s output without it. `width` is that 16 (`_LANES`),
    passed at run time: as a compile-time constant, LLVM unrolls the loops over the lanes into
    scalar code instead of vectorizing them (~30% slower)."""
    batch, length, hidden = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
    head_size = hidden // num_heads
    scale = np.float32(1.0 / math.sqrt(head_size))
    for block in prange((batch + width - 1) // width):
        first, lanes = block * width, min(width, batch - block * width)
        local = np.zeros((3 * hidden, length, width), np.float32)
        real = np.ones((length, width), np.float32)  # lanes past the batch: all keys real
        for lane in range(lanes):
            for j in range(length):
                real[j, lane] = key_real[first + lane, j]
                for c in range(3 * hidden):
                    local[c, j, lane] = qkv[first + lane, j, c] + bias[c]
        weights = np.zeros((length, width), np.float32)  # (key, sequence) for one query
        top, total = np.zeros(width, np.float32), np.zeros(width, np.float32)
        attended = np.zeros((head_size, width), np.float32)
        for h in range(num_heads):
            query, key, value = h * head_size, hidden + h * head_size, 2 * hidden + h * head_size
            for i in range(length):
                top[:] = -3.0e38
                for j in range(length):
                    weights[j, :] = 0.0
                    for d in range(head_size):
                        for lane in range(width):
                            weights[j, lane] += local[key + d, j, lane] * local[query + d, i, lane]
                    for lane in range(width):
                        if real[j, lane] > 0:
                            top[lane] = max(top[lane], weights[j, lane])
                total[:] = 0.0
                for j in range(length):
                    for lane in range(width):
                        weights[j, lane] = _exp_nonpositive(min((weights[j, lane] - top[lane]) * scale, 0.0)) * real[j, lane]
                        total[lane] += weights[j, lane]
                for lane in range(width):
                    total[lane] = np.float32(1.0) / total[lane]
                attended[:] = 0.0
                for j in range(length):
                    for lane in range(width):
                        weights[j, lane] *= total[lane]
                    for d in range(head_size):
                        for lane in range(width):
                            attended[d, lane] += weights[j, lane] * local[value + d, j, lane]
                for lane in range(lanes):
                    for d in range(head_size):
                        out[first + lane, i, h * head_size + d] = attended[d, lane]


@njit(inline="always")
def _sum_by_16(values: np.ndarray, partial: np.ndarray) -> float:
    """The sum of a float32 vector, as 16 running sums (one vector register) added at the end:
    vectorized, yet in an order fixed by the code (see _NO_REASSOCIATION)."""
    partial[:] = 0.0
    whole = values.shape[0] // 16 * 16
    for start in range(0, whole, 16):
        for k in range(16):
            partial[k] += values[start + k]
    for c in range(whole, values.shape[0]):
        partial[c - whole] += values[c]
    total = np.float32(0.0)
    for k in range(16):
        total += partial[k]
    return total


@_compiled(parallel=True, fastmath=_NO_REASSOCIATION)
def _add_norm_cpu(y: np.ndarray, bias: np.ndarray, residual: np.ndarray, weight: np.ndarray,
                  shift: np.ndarray, eps: float) -> None:
    """y = LayerNorm(y + bias + residual) in place, over the rows of y (N, H): the end of a
    post-norm block at evaluation, `norm(residual + linear(x))` with the linear layer's bias
    left out of its matrix product, in one pass instead of three."""
    rows, width = y.shape
    for chunk in prange(_CHUNKS):
        partial, centered = np.zeros(16, np.float32), np.zeros(width, np.float32)
        for r in range(chunk * rows // _CHUNKS, (chunk + 1) * rows // _CHUNKS):
            for c in range(width):
                centered[c] = y[r, c] + bias[c] + residual[r, c]
            mean = _sum_by_16(centered, partial) / np.float32(width)
            for c in range(width):
                centered[c] -= mean
                y[r, c] = centered[c] * centered[c]
            scale = np.float32(1.0) / np.sqrt(_sum_by_16(y[r], partial) / np.float32(width) + np.float32(eps))
            for c in range(width):
                y[r, c] = centered[c] * scale * weight[c] + shift[c]


@_compiled(parallel=True, fastmath=_NO_REASSOCIATION)
def _add_relu_cpu(y: np.ndarray, bias: np.ndarray) -> None:
    """y = relu(y + bias) in place, over the rows of y (N, H)."""
    rows, width = y.shape
    for r in prange(rows):
        for c in range(width):
            y[r, c] = max(y[r, c] + bias[c], np.float32(0.0))


def _arrays(*tensors: torch.Tensor) -> list[np.ndarray]:
    """The numpy views of CPU tensors (parameters included), for the compiled kernels."""
    return [tensor.detach().numpy() for tensor in tensors]


def encoder_layer_inference(layer: nn.Module, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
    """model.EncoderLayer's forward at evaluation (eval mode, no autograd) on CPU: the same
    function in fewer passes over memory; x (B, T, H), padding (B, T) True at padded tokens.
    The matrix products leave out their bias (addmm would first copy it into every output row),
    which the pass after each adds: the attention kernel's copy, `_add_relu_cpu`, or
    `_add_norm_cpu`, which also adds the residual and normalizes. Sequences of up to
    _LANE_KERNEL_MAX_TOKENS (20) tokens go to `_attention_inference_cpu`, faster there than
    `_AttentionCPU` (which pads the queries to a multiple of 16); beyond, the latter is faster
    (2-core AMD EPYC, per call of 9,600 tokens: 0.92 vs 2.37 ms at 6 tokens, 1.73 vs 2.47 at 11,
    2.45 vs 2.54 at 20, 3.03 vs 2.59 at 26)."""
    batch, length, hidden = x.shape
    rows = x.reshape(-1, hidden)  # (B*T, H)
    qkv = F.linear(rows, layer.self_attn.in_proj_weight).view(batch, length, 3 * hidden)
    qkv_bias, key_real = layer.self_attn.in_proj_bias.detach(), (~padding).to(torch.uint8)
    if length <= _LANE_KERNEL_MAX_TOKENS:
        attended = x.new_empty(batch, length, hidden)
        _attention_inference_cpu(qkv.numpy(), qkv_bias.numpy(), key_real.numpy(), layer.num_heads,
                                 attended.numpy(), _LANES)
    else:
        attended = _AttentionCPU.apply(qkv.add_(qkv_bias), key_real, layer.num_heads, 0.0, 0)
    x = F.linear(attended.view(-1, hidden), layer.self_attn.out_proj.weight)
    _add_norm_cpu(x.numpy(), *_arrays(layer.self_attn.out_proj.bias, rows, layer.norm1.weight,
                                      layer.norm1.bias), layer.norm1.eps)
    hidden_ff = F.linear(x, layer.linear1.weight)  # (B*T, ff)
    _add_relu_cpu(hidden_ff.numpy(), *_arrays(layer.linear1.bias))
    out = F.linear(hidden_ff, layer.linear2.weight)
    _add_norm_cpu(out.numpy(), *_arrays(layer.linear2.bias, x, layer.norm2.weight, layer.norm2.bias),
                  layer.norm2.eps)
    return out.view(batch, length, hidden)
