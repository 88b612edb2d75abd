"""T3's linear layers packed for oneDNN (packed_linear): the same sums, the same tokens, gradients intact."""

from __future__ import annotations

import pytest
import torch

from chatterbox_predictor.cloning.tuning import Example, teacher_forced_loss
from chatterbox_predictor.engine import EngineConfig, prepare_t3
from chatterbox_predictor.loading import load_model
from chatterbox_predictor.packed_linear import PackedLinear, pack_linears, supported
from chatterbox_predictor.sampling import SamplingParams
from chatterbox_predictor.t3_stream import T3Batch, T3Row, with_exaggeration
from chatterbox_predictor.variants import get_variant

pytestmark = pytest.mark.skipif(not supported(torch.float32), reason="this PyTorch has no oneDNN linear")

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Please leave the package at the front door.",
         "Our next train leaves from platform four.", "Is it raining in the city today?"]
TOKENS = 40


@pytest.fixture(scope="module", params=["turbo", "english", "multilingual"])
def pair(request, random_checkpoint):
    """(variant, plain, packed): two loads of one small checkpoint, so neither is rounded by the other.

    One variant at a time (pytest tears a parametrized module fixture down when its parameter changes):
    the three variants' six models held together were 14 GB, and the memory this process kept of them
    starved the servers that later modules start (CI's server tests timed out in their warm-up)."""
    variant = request.param

    def load(pack):
        model = load_model(random_checkpoint(variant), variant, device="cpu")
        prepare_t3(model, EngineConfig.from_settings(variant=variant, pack_weights=pack))
        return model
    return variant, load(False), load(True)


@pytest.mark.parametrize("bias", [True, False])
def test_a_packed_layer_computes_the_dense_layers_sums_for_any_number_of_rows(bias):
    torch.manual_seed(0)
    dense = torch.nn.Linear(1024, 3072, bias=bias)
    packed = PackedLinear(dense.weight, dense.bias)
    for shape in [(1, 1024), (3, 1024), (4, 7, 1024), (300, 1024)]:
        x = torch.randn(shape)
        with torch.inference_mode():
            exact = torch.nn.functional.linear(x.double(), dense.weight.double(),
                                               None if dense.bias is None else dense.bias.double())
            ours, theirs = packed(x), dense(x)
        assert ours.shape == theirs.shape
        # Within the rounding of a float32 sum of n terms, sqrt(n) * eps * sum |x_i w_i| per output (the
        # usual statistical bound). Not a ratio to MKL's error: oneDNN's summation order depends on the
        # CPU (on an AMX host its worst error was 7x MKL's, 0.08 of this bound; MKL's 0.03).
        magnitude = torch.nn.functional.linear(x.double().abs(), dense.weight.double().abs())
        bound = 1024 ** 0.5 * torch.finfo(torch.float32).eps * magnitude
        for result in (ours, theirs):
            assert ((result.double() - exact).abs() <= bound).all(), shape


def test_pack_linears_replaces_every_linear_of_the_transformer_and_nothing_it_cannot_serve(pair):
    variant, plain, packed = pair
    layers = plain.t3.tfmr.config.num_hidden_layers
    # Turbo (GPT-2): qkv, attention out, two MLP; English and Multilingual (Llama): q, k, v, o and three MLP.
    per_layer = 4 if variant == "turbo" else 7
    assert sum(isinstance(m, PackedLinear) for m in packed.t3.tfmr.modules()) == layers * per_layer
    assert not any(isinstance(m, PackedLinear) for m in plain.t3.modules())
    assert packed.t3.device.type == "cpu"  # the library reads the speech head's weight for it


def test_a_half_precision_transformer_is_left_as_it_is(random_checkpoint):
    half = load_model(random_checkpoint("turbo"), "turbo", device="cpu")
    half.t3.to(dtype=torch.float16)  # oneDNN has no float16 linear on the CPU: left as it is
    assert pack_linears(half.t3) == 0 and not any(isinstance(m, PackedLinear) for m in half.t3.modules())


def _tokens(model, variant: str, seeds) -> list[list[int]]:
    """TEXTS decoded together in one batch, one seed each, TOKENS at most (end of speech may come first)."""
    v = get_variant(variant)
    params = SamplingParams(max_new_tokens=TOKENS).resolved(v.sampling_defaults, 1000)
    cond = with_exaggeration(model.conds.t3, 0.5)
    batch, rows = T3Batch(model.t3), []
    language = "fr" if v.needs_language else None
    for text, seed in zip(TEXTS, seeds, strict=True):
        row = T3Row(model.t3, v, cond, v.text_tokens(model, text, language), params,
                    torch.Generator().manual_seed(seed))
        # Multilingual: the alignment control reads the watched heads' queries through their (packed)
        # layers; a server with packed weights failed its warm-up there (PackedLinear has no `weight`).
        assert (row.alignment is not None) == v.alignment_control
        batch.add(row)
        rows.append(row)
    drawn = {row: [] for row in rows}
    while batch.rows:
        for row, token in batch.step().items():
            if token is not None:
                drawn[row].append(token)
            if row.done:  # end of speech or the cap
                with torch.inference_mode():  # the cache was made in it (as the engine's worker runs)
                    batch.remove(row)
    return [drawn[row] for row in rows]


def test_packed_and_plain_weights_draw_the_same_tokens_in_a_batch(pair):
    variant, plain, packed = pair
    seeds = range(len(TEXTS))
    ours, theirs = _tokens(packed, variant, seeds), _tokens(plain, variant, seeds)
    same = sum(a == b for x, y in zip(ours, theirs, strict=True) for a, b in zip(x, y, strict=False))
    total = sum(len(x) for x in theirs)
    print(f"{variant}: {same}/{total} tokens the same at the same position")
    # Measured: every token the same (here, and 150 of 150 on the full-size Turbo, bench/steps.py); the
    # sums differ in the last bits only, so a draw parts only where two candidates are that close.
    assert total >= len(TEXTS) * TOKENS // 2 and same >= 0.95 * total


def test_the_cloners_gradient_through_packed_layers_is_the_dense_models(pair):
    """Tuning differentiates the loss through T3 for the speaker embedding: the packed layers' backward
    must be the real one (the fused op has none of its own)."""
    variant, plain, packed = pair
    v = get_variant(variant)
    cond = plain.conds.t3
    text = v.text_tokens(plain, "Hello there, how are you?", "fr" if v.needs_language else None)
    speech = torch.randint(0, 6000, (1, 30), generator=torch.Generator().manual_seed(1))
    example = Example(text.clone(), speech)
    grads = []
    for model in (plain, packed):
        param = cond.speaker_emb.detach().clone().requires_grad_(True)
        loss = teacher_forced_loss(model, v, param, cond.cond_prompt_speech_tokens, cond.emotion_adv, example)
        (grad,) = torch.autograd.grad(loss, [param])
        grads.append((loss.detach(), grad))
    (plain_loss, plain_grad), (packed_loss, packed_grad) = grads
    assert plain_grad.abs().sum() > 0
    torch.testing.assert_close(packed_loss, plain_loss)
    torch.testing.assert_close(packed_grad, plain_grad)
