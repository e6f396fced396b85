"""model: the written-out encoder is nn.TransformerEncoder's function and init; padding does not
change the output; the fast path (speed/cpu_kernels.py) and the plain torch path compute the same
model end to end on CPU, in training, in evaluation and through the trainer and the evaluator;
`fast_kernels`, chosen when the model is built or switched on a built one, chooses between
them; activation_floats follows the model's sizes.
The kernels themselves are tested one by one in tests/test_cpu_kernels.py."""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from baselines.models import GMF
from config import Config
from data_loader import DeviceData, build_dataset
from evaluate import ranking_metrics, score_candidates
from model import ACMR, Encoder, EncoderLayer, activation_floats, build_model, dropout
from speed import cpu_kernels
from tests.conftest import synthetic_frames
from train_model import batch_loss, make_optimizer, train_epoch

PATHS = {"fast": True, "plain": False}  # fast_kernels


def reference_encoder(num_layers: int = 4) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(32, 8, 128, 0.3, batch_first=True)
    return nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)


def random_batch(batch: int = 64, length: int = 12, num_items: int = 200, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    history = torch.randint(1, num_items + 1, (batch, length), generator=generator)
    history[torch.arange(length)[None, :] >= lengths[:, None]] = 0
    candidate = torch.randint(1, num_items + 1, (batch,), generator=generator)
    market = torch.randint(0, 7, (batch,), generator=generator)
    return history, candidate, market


def perturbed(model: nn.Module) -> nn.Module:
    """The model with noise on every weight, as training leaves them: the layers, identical at
    init, then differ."""
    for parameter in model.parameters():
        parameter.data.add_(torch.randn_like(parameter) * 0.1)
    return model


def test_encoder_has_the_parameters_and_initial_weights_of_nn_transformer_encoder():
    torch.manual_seed(0)
    ours = Encoder(EncoderLayer(32, 8, 128, 0.3), 4)
    torch.manual_seed(0)
    reference = reference_encoder()
    ours_state, reference_state = ours.state_dict(), reference.state_dict()
    assert sorted(ours_state) == sorted(reference_state)
    for name, value in ours_state.items():
        assert torch.equal(value, reference_state[name]), name


@pytest.mark.parametrize("path", PATHS)
def test_encoder_computes_nn_transformer_encoder_function(path: str):
    torch.manual_seed(0)
    ours = perturbed(Encoder(EncoderLayer(32, 8, 128, 0.3, fast_kernels=PATHS[path]), 4)).eval()
    reference = reference_encoder().eval()
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(16, 10, 32)
    padding = torch.zeros(16, 10, dtype=torch.bool)
    padding[:, 6:9] = True
    with torch.no_grad():
        torch.testing.assert_close(ours(x, padding), reference(x, src_key_padding_mask=padding),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path", PATHS)
def test_output_does_not_depend_on_how_far_the_history_is_padded(path: str):
    torch.manual_seed(0)
    model = ACMR(num_items=200, num_markets=7, fast_kernels=PATHS[path]).eval()
    history, candidate, market = random_batch(length=12)
    padded_to_50 = torch.cat([history, torch.zeros(len(history), 38, dtype=torch.long)], dim=1)
    with torch.no_grad():
        trimmed = model(None, history, candidate, market)
        padded = model(None, padded_to_50, candidate, market)
        one_by_one = torch.stack([model(None, h[h > 0][None], c[None], m[None])[0]
                                  for h, c, m in zip(history, candidate, market)])
    torch.testing.assert_close(trimmed, padded, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(trimmed, one_by_one, rtol=1e-5, atol=1e-5)


def test_the_market_embedding_changes_the_score():
    torch.manual_seed(0)
    model = ACMR(num_items=200, num_markets=7).eval()
    history, candidate, market = random_batch()
    with torch.no_grad():
        assert not torch.allclose(model(None, history, candidate, market), model(None, history, candidate, (market + 1) % 7))


@pytest.mark.parametrize("path", PATHS)
def test_dropout_is_the_identity_outside_training_or_at_p_0_on_both_paths(path: str):
    x = torch.randn(1001)
    assert dropout(x, 0.3, False, compiled=PATHS[path]) is x
    assert torch.equal(dropout(x, 0.3, False, relu=True, compiled=PATHS[path]), torch.relu(x))
    assert dropout(x, 0.0, True, compiled=PATHS[path]) is x


def test_a_few_training_steps_lower_the_loss():
    torch.manual_seed(0)
    model = ACMR(num_items=200, num_markets=7)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    history, candidate, market = random_batch(batch=64, seed=1)
    label = (candidate % 2).float()  # a learnable rule
    loss_function = nn.BCEWithLogitsLoss()
    losses = []
    for _ in range(30):
        loss = loss_function(model(None, history, candidate, market), label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_evaluation_path_computes_the_training_path_function():
    """On the fast path, eval mode without autograd runs its own kernels (a whole layer at a
    time; on short sequences its own attention kernel): it must give what the autograd path gives."""
    torch.manual_seed(0)
    model = perturbed(ACMR(num_items=200, num_markets=7)).eval()
    for length in (3, 19, 30):
        history, candidate, market = random_batch(batch=50, length=length, seed=length)
        with_autograd = model(None, history, candidate, market)
        with torch.inference_mode():
            evaluation = model(None, history, candidate, market)
        torch.testing.assert_close(evaluation, with_autograd.detach(), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- fast and plain, end to end

@pytest.fixture(scope="module")
def synthetic():
    """A small dataset (tests/conftest.py's synthetic markets, target `in`), on CPU, and a config
    without dropout that trains in small batches."""
    config = Config(max_history=50, num_eval_negatives=20, num_train_negatives=2, dropout=0.0,
                    batch_size=128, max_batches_per_epoch=3)
    dataset = build_dataset(synthetic_frames(), "in", seed=0, config=config)
    return config, dataset, DeviceData.from_dataset(dataset, torch.device("cpu"))


def both_paths(config: Config, dataset) -> dict[str, nn.Module]:
    """The same ACMR (perturbed weights) built by build_model with fast_kernels on and off."""
    torch.manual_seed(0)
    models = {path: build_model(dataclasses.replace(config, fast_kernels=fast), dataset)
              for path, fast in PATHS.items()}
    models["plain"].load_state_dict(perturbed(models["fast"]).state_dict())
    return models


def test_build_model_reads_fast_kernels_and_the_baselines_still_build(synthetic):
    config, dataset, data = synthetic
    models = both_paths(config, dataset)
    for path, fast in PATHS.items():
        assert models[path].fast_kernels == fast
        assert [layer.fast_kernels for layer in models[path].encoder.layers] == [fast] * config.num_layers
    for name in ("popularity", "gmf", "mlp", "nmf"):
        model = build_model(dataclasses.replace(config, model=name, fast_kernels=False), dataset)
        users = data.target_users
        logits = model(users, data.user_history[users], data.test_candidates[:, 0], data.user_market[users])
        assert logits.shape == users.shape and torch.isfinite(logits).all(), name


@pytest.mark.slow  # float64 forward and backward passes of both paths: seconds of compute
def test_fast_and_plain_paths_both_give_the_float64_logits_and_gradients(synthetic):
    """Training mode (dropout 0), eval mode with autograd and evaluation without it, on every
    eighth training row (histories of 1 to 50 items: both evaluation attention kernels run).
    The reference is the plain path in float64. The gradients are sums over ~450 rows: the fast
    path's agree with it to 5e-5 of each tensor's largest entry; the plain path's own float32
    rounding reaches 1.5e-4 on some CPUs (item_embedding), so it gets 3e-4."""
    config, dataset, data = synthetic
    models = both_paths(config, dataset)
    models["float64"] = copy.deepcopy(models["plain"]).double()
    index = torch.arange(0, len(data.train_user), 8)
    width = int(data.history_length[data.train_user[index]].max())
    assert width + 1 > cpu_kernels._LANE_KERNEL_MAX_TOKENS
    results = {}
    for path, model in models.items():
        loss = batch_loss(model.train(), data, index, width, config)
        loss.backward()
        users = data.train_user[index]
        inputs = (users, data.user_history[users, :width], data.train_item[index], data.user_market[users])
        with_autograd = model.eval()(*inputs).detach()
        with torch.inference_mode():
            evaluation = model(*inputs)
        results[path] = (loss.detach().double(), [p.grad.double() for p in model.parameters()],
                         with_autograd.double(), evaluation.double())
    reference_loss, reference_grads, *reference_logits = results.pop("float64")
    for path, gradient_tolerance in (("fast", 5e-5), ("plain", 3e-4)):
        loss, grads, *logits = results[path]
        torch.testing.assert_close(loss, reference_loss, rtol=1e-6, atol=0)
        names = [name for name, _ in models[path].named_parameters()]
        for name, gradient, reference in zip(names, grads, reference_grads, strict=True):
            scale = float(reference.abs().max())
            torch.testing.assert_close(gradient, reference, rtol=0, atol=gradient_tolerance * scale,
                                       msg=lambda message: f"{path} {name}: {message}")
        for output, reference in zip(logits, reference_logits, strict=True):
            torch.testing.assert_close(output, reference, rtol=1e-5, atol=1e-5)


def test_a_few_adam_steps_through_the_trainer_are_the_same_on_both_paths(synthetic):
    """Two epochs of three batches each (train_model.train_epoch, dropout 0): the same losses and
    the same model after them. Adam divides each gradient by its running scale, so where a true
    gradient is 0 (in_proj's key bias: softmax ignores a constant added to every score of a
    row), each path steps by ~lr along its own rounding noise; such weights change nothing, and
    the model's scores after training agree."""
    config, dataset, data = synthetic
    models = both_paths(config, dataset)
    rows = np.arange(len(dataset.train_user))
    losses, scores = {}, {}
    for path, model in models.items():
        optimizer = make_optimizer(model, config, torch.device("cpu"))
        rng = np.random.default_rng(0)
        losses[path] = [train_epoch(model, optimizer, data, rows, rng, config, path, bucket=True)
                        for _ in range(2)]
        scores[path] = score_candidates(model, data, data.valid_candidates, 0)
    np.testing.assert_allclose(losses["fast"], losses["plain"], rtol=1e-5)
    assert losses["fast"][1] < losses["fast"][0]
    torch.testing.assert_close(scores["fast"], scores["plain"], rtol=1e-4, atol=1e-4)
    fast, plain = (dict(models[path].named_parameters()) for path in PATHS)
    for name in fast:
        if name.endswith("in_proj_bias"):  # the queries' and values' parts; the keys' is the middle third
            fast[name], plain[name] = (torch.cat(weight.detach().chunk(3)[::2]) for weight in (fast[name], plain[name]))
        torch.testing.assert_close(fast[name], plain[name], rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.slow
def test_with_dropout_both_paths_train_at_the_same_loss_scale(synthetic):
    """With dropout 0.3 the paths draw different masks (the fast dropout's come from its own
    seeded hash, cpu_kernels.dropout, not from torch's generator), so their losses are not
    equal, only alike: the same scale at every epoch, both falling (rows of histories up to 20
    items, for speed)."""
    config, dataset, data = synthetic
    config = dataclasses.replace(config, dropout=0.3, max_batches_per_epoch=4, batch_size=256)
    rows = np.flatnonzero(dataset.history_length[dataset.train_user] <= 20)
    losses = {}
    for path, fast in PATHS.items():
        torch.manual_seed(0)
        model = build_model(dataclasses.replace(config, fast_kernels=fast), dataset)
        optimizer = make_optimizer(model, config, torch.device("cpu"))
        rng = np.random.default_rng(0)
        losses[path] = np.array([train_epoch(model, optimizer, data, rows, rng, config, path, bucket=True)
                                 for _ in range(3)])
    assert not np.array_equal(losses["fast"], losses["plain"])  # other masks
    np.testing.assert_allclose(losses["fast"], losses["plain"], rtol=0.05)
    for path in PATHS:
        assert losses[path][-1] < losses[path][0], path


def test_evaluation_scores_and_ranks_the_same_on_both_paths(synthetic):
    config, dataset, data = synthetic
    models = both_paths(config, dataset)
    lengths = data.history_length[data.target_users]
    assert lengths.min() + 1 <= cpu_kernels._LANE_KERNEL_MAX_TOKENS < lengths.max() + 1  # both kernels
    scores = {path: score_candidates(model, data, data.test_candidates, 0) for path, model in models.items()}
    torch.testing.assert_close(scores["fast"], scores["plain"], rtol=1e-5, atol=1e-5)
    assert ranking_metrics(scores["fast"]) == ranking_metrics(scores["plain"])


@pytest.fixture
def kernel_calls(monkeypatch) -> list[str]:
    """The names of the kernels of speed/cpu_kernels.py that run, as they run."""
    calls = []
    for name in ("dropout", "attention", "encoder_layer_inference"):
        kernel = getattr(cpu_kernels, name)
        monkeypatch.setattr(cpu_kernels, name, lambda *args, _name=name, _kernel=kernel, **kwargs:
                            calls.append(_name) or _kernel(*args, **kwargs))
    return calls


def test_fast_kernels_chooses_whether_the_cpu_kernels_run(synthetic, kernel_calls):
    """Off, a training step and an evaluation call no kernel of speed/cpu_kernels.py; on, they call
    each of them (dropout included: this test trains with dropout)."""
    config, dataset, data = synthetic
    config = dataclasses.replace(config, dropout=0.3)
    for path, fast in PATHS.items():
        kernel_calls.clear()
        torch.manual_seed(0)
        model = build_model(dataclasses.replace(config, fast_kernels=fast), dataset)
        batch_loss(model.train(), data, torch.arange(64), int(data.history_length.max()), config).backward()
        score_candidates(model, data, data.valid_candidates, 0)
        assert set(kernel_calls) == ({"dropout", "attention", "encoder_layer_inference"} if fast else set()), path


def test_switching_fast_kernels_on_a_built_model_switches_every_layer(synthetic, kernel_calls):
    """`model.fast_kernels = flag` reaches the embeddings' dropout and every encoder layer: a
    model built with the kernels and switched off runs none of them, and switched back on, all."""
    config, dataset, data = synthetic
    config = dataclasses.replace(config, dropout=0.3)
    model = build_model(dataclasses.replace(config, fast_kernels=True), dataset)
    for fast in (False, True):
        model.fast_kernels = fast
        assert [layer.fast_kernels for layer in model.encoder.layers] == [fast] * config.num_layers
        kernel_calls.clear()
        batch_loss(model.train(), data, torch.arange(64), int(data.history_length.max()), config).backward()
        score_candidates(model, data, data.valid_candidates, 0)
        assert set(kernel_calls) == ({"dropout", "attention", "encoder_layer_inference"} if fast else set()), fast


def test_a_model_with_fast_kernels_off_the_cpu_runs_the_torch_path(kernel_calls):
    """The kernels take CPU tensors only: a model built with them and moved to another device
    (here `meta`, which computes shapes only) runs the plain torch ops, in training and evaluation."""
    model = ACMR(num_items=200, num_markets=7, fast_kernels=True).to("meta")
    history, candidate, market = (tensor.to("meta") for tensor in random_batch(batch=8))
    assert model.train()(None, history, candidate, market).shape == (8,)
    with torch.inference_mode():
        assert model.eval()(None, history, candidate, market).shape == (8,)
    assert kernel_calls == []


def test_activation_floats_follow_the_models_sizes():
    """ACMR's own ff_size and num_heads; a baseline (no encoder) is budgeted as a default ACMR."""
    small = ACMR(num_items=10, num_markets=2, hidden_size=16, num_heads=4, ff_size=64)
    assert activation_floats(small, 10, 5) == 10 * 5 * (64 + 4 * 5)
    default = ACMR(num_items=10, num_markets=2)
    assert activation_floats(default, 10, 5) == 10 * 5 * (128 + 8 * 5)
    assert activation_floats(GMF(num_users=2, num_items=10), 10, 5) == activation_floats(default, 10, 5)
