"""The perplexity study: its corpus, its perplexity against transformers, its plans and its command."""

import json
import math

import pytest
import torch

from cli import main
from minilazy.fastv import VTW, FastV
from minilazy.lazy.calibrate import divergence_matrix, js_divergence, plan_for_ratio
from minilazy.lazy.plan import LayerPlan
from minilazy.model import Model
from minilazy.perplexity.corpus import build_corpus, docstrings
from minilazy.perplexity.study import calibrate, kv_bytes, matched_baselines, perplexity
from tests.runtime.tiny_models import TOKENIZER_VOCAB, save_llama, save_tokenizer

LAYERS, SPAN, TAIL = 4, 24, 8
STOPWORDS = {"the", "a", "of", "to", "is", "and", "in", "if", "be", "for", "or", "an", "this", "that", "it", "are"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random Llama checkpoint with the character tokenizer, its transformers twin, and the corpus."""
    path = tmp_path_factory.mktemp("tiny_llama")
    reference = save_llama(path, vocab=TOKENIZER_VOCAB, layers=LAYERS)
    tokenizer = save_tokenizer(path)
    model = Model.from_pretrained(path, backend="torch")
    return path, reference, model, build_corpus(tokenizer, SPAN + TAIL)


def test_corpus_is_deterministic_english_prose():
    first, second = docstrings(), docstrings()
    assert first == second and len(first) > 200 and len(set(first)) == len(first)
    words = " ".join(first).lower().split()
    assert sum(w in STOPWORDS for w in words) > 0.12 * len(words)  # English function words, not code
    assert "Return" in " ".join(first)


def test_windows_have_the_right_length_and_disjoint_splits(tiny):
    corpus = tiny[3]
    assert corpus.num_windows > 100 and corpus.windows().shape == (corpus.num_windows, SPAN + TAIL)
    evaluation, calibration = corpus.splits(6, 3)
    assert evaluation.shape == (6, SPAN + TAIL) and calibration.shape == (3, SPAN + TAIL)
    assert not any(torch.equal(e, c) for e in evaluation for c in calibration)
    again, _ = corpus.splits(6, 5)  # the evaluation windows do not depend on the calibration split's size
    assert torch.equal(evaluation, again)


def test_full_attention_perplexity_is_exp_mean_nll_of_transformers(tiny):
    _, reference, model, corpus = tiny
    windows, _ = corpus.splits(5, 1)
    with torch.no_grad():
        logits = reference(windows).logits  # [N, T, V]
    # the tail's tokens from its second on, each predicted at the tail position before it
    nll = torch.nn.functional.cross_entropy(logits[:, SPAN:-1].reshape(-1, logits.shape[-1]).double(),
                                            windows[:, SPAN + 1 :].reshape(-1))
    expected = math.exp(float(nll))
    got = perplexity(model, windows, SPAN, None, batch_size=2, progress=False)
    assert got == pytest.approx(expected, rel=1e-4)


def test_ratio_zero_plan_equals_full_and_lazy_plans_differ(tiny):
    _, _, model, corpus = tiny
    evaluation, calibration = corpus.splits(4, 2)
    js, _ = calibrate(model, calibration, SPAN, progress=False)
    assert js.shape == (LAYERS, LAYERS) and bool((js[~torch.eye(LAYERS, dtype=torch.bool)] > 0).all())
    none_lazy, _ = plan_for_ratio(js, 0.0)
    assert none_lazy.lazy_layers == []
    full = perplexity(model, evaluation, SPAN, None, progress=False)
    assert perplexity(model, evaluation, SPAN, none_lazy, progress=False) == pytest.approx(full, rel=1e-6)
    lazy, _ = plan_for_ratio(js, 0.25, scope="all")
    assert len(lazy.lazy_layers) == 1
    assert perplexity(model, evaluation, SPAN, lazy, progress=False) != pytest.approx(full, rel=1e-3)
    cfg = model.config.text
    assert kv_bytes(model, LayerPlan.full(LAYERS), SPAN, SPAN + TAIL) == (
        LAYERS * 2 * cfg.num_key_value_heads * cfg.head_dim * (SPAN + TAIL) * 4)


def test_command_writes_table_json_and_plots(tiny, tmp_path, capsys):
    path = tiny[0]
    argv = ["perplexity", "--model", str(path), "--windows", "4", "--calib", "2", "--span", str(SPAN), "--tail",
            str(TAIL), "--ratios", "0.25", "0.5", "--batch-size", "4", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "full attention" in printed and "reproduce: python cli.py perplexity --model" in printed
    result = json.loads((tmp_path / "perplexity.json").read_text())
    for field in ("model", "command", "corpus", "span", "tail", "full", "plans", "divergence", "seconds"):
        assert field in result
    assert result["span"] == SPAN and result["tail"] == TAIL and result["scored_tokens"] == 4 * (TAIL - 1)
    assert [(p["scope"], p["ratio"]) for p in result["plans"]] == [
        ("visual", 0.25), ("visual", 0.5), ("all", 0.25), ("all", 0.5)]
    for plan in result["plans"]:
        assert len(plan["lazy_layers"]) >= 1
        assert plan["kv_saved"] == pytest.approx(plan["kv_saved_formula"], abs=1e-12) and plan["kv_saved"] > 0
        assert math.isfinite(plan["perplexity"])
        assert plan["increase"] == pytest.approx(plan["perplexity"] / result["full"]["perplexity"] - 1)
    for name in ("perplexity.png", "divergence.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("layer", [1, 3])
def test_vtw_perplexity_equals_transformers_on_the_tail_alone_from_layer_k(tiny, layer):
    """VTW from layer K: transformers' layers before K on the whole window, then layers K on over the tail's
    hidden states alone, at their own positions."""
    _, reference, model, corpus = tiny
    windows, _ = corpus.splits(3, 1)
    layers = reference.model.layers
    with torch.no_grad():
        hidden = reference.model(windows, output_hidden_states=True).hidden_states[layer][:, SPAN:]  # [N, tail, D]
        reference.model.layers = torch.nn.ModuleList(list(layers)[layer:])
        try:
            positions = torch.arange(SPAN, SPAN + TAIL)[None].expand(windows.shape[0], -1)  # [N, tail]
            logits = reference(inputs_embeds=hidden, position_ids=positions).logits  # [N, tail, V]
        finally:
            reference.model.layers = layers
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).double(),
                                            windows[:, SPAN + 1 :].reshape(-1))
    got = perplexity(model, windows, SPAN, None, batch_size=2, progress=False, fastv=VTW(layer))
    assert got == pytest.approx(math.exp(float(nll)), rel=1e-4)


def test_withdrawing_nothing_is_full_attention(tiny):
    _, _, model, corpus = tiny
    windows, _ = corpus.splits(3, 1)
    full = perplexity(model, windows, SPAN, None, progress=False)
    assert perplexity(model, windows, SPAN, None, progress=False, fastv=VTW(LAYERS)) == pytest.approx(full, rel=1e-6)
    assert perplexity(model, windows, SPAN, None, progress=False, fastv=FastV(2, 0.0)) == pytest.approx(full, rel=1e-6)
    assert perplexity(model, windows, SPAN, None, progress=False, fastv=FastV(2, 0.5)) != pytest.approx(full, rel=1e-3)


def test_matched_baselines_save_what_the_lazy_plan_saves(tiny):
    model = tiny[2]
    lazy = LayerPlan((0, 0, 2, 2))  # 2 of 4 layers lazy

    def planner(ratio, scope, fastv_layer):  # the plan of ratio 0.25 that FastV at layer 2 allows
        assert (ratio, scope, fastv_layer) == (0.25, "visual", 2)
        return LayerPlan((0, 1, 2, 2)), None

    runs = matched_baselines(len(lazy.lazy_layers), 0.5, planner, LAYERS, 2)
    assert [(name, kind) for name, kind, _, _ in runs] == [
        ("FastV K=2 R=0.5", "fastv"), ("VTW K=3", "vtw"), ("lazy 0.25 + FastV K=2 R=0.3333", "lazy+fastv")]
    window = SPAN + TAIL
    full = kv_bytes(model, LayerPlan.full(LAYERS), SPAN, window)
    saved = full - kv_bytes(model, lazy, SPAN, window)
    for _, _, plan, fastv in runs:
        assert full - kv_bytes(model, plan, SPAN, window, fastv) == saved > 0
    assert [len(r[2].lazy_layers) for r in runs if r[2] is not None] == [1]


def test_command_with_baselines_adds_their_rows(tiny, tmp_path, capsys):
    argv = ["perplexity", "--model", str(tiny[0]), "--windows", "2", "--calib", "2", "--span", str(SPAN), "--tail",
            str(TAIL), "--ratios", "0.5", "--scopes", "visual", "--lazy-method", "rank", "--baselines", "--out", str(tmp_path),
            "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "VTW K=3" in printed and "FastV K=2 R=0.5" in printed and "lazy 0.25 + FastV K=2" in printed
    result = json.loads((tmp_path / "perplexity.json").read_text())
    lazy = result["plans"][0]
    assert len(lazy["lazy_layers"]) == 2
    assert [b["kind"] for b in result["baselines"]] == ["fastv", "vtw", "lazy+fastv"]
    for baseline in result["baselines"]:
        assert baseline["kv_saved"] == pytest.approx(lazy["kv_saved"]) and baseline["matches"] == 0.5
        assert math.isfinite(baseline["perplexity"]) and baseline["perplexity"] != pytest.approx(lazy["perplexity"])
    assert (tmp_path / "perplexity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("method", ["rank", "greedy"])
def test_command_with_plans_chosen_by_their_effect(tiny, tmp_path, capsys, method):
    argv = ["perplexity", "--model", str(tiny[0]), "--windows", "2", "--calib", "2", "--span", str(SPAN), "--tail",
            str(TAIL), "--ratios", "0.25", "0.5", "--scopes", "visual", "--lazy-method", method, "--out", str(tmp_path),
            "--no-progress"]
    assert main(argv) == 0
    result = json.loads((tmp_path / "perplexity.json").read_text())
    assert result["method"] == method and [len(p["lazy_layers"]) for p in result["plans"]] == [1, 2]
    assert all(p["threshold"] is None and math.isfinite(p["perplexity"]) for p in result["plans"])
    assert (tmp_path / "divergence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("flags, message", [
    (["--span", "0"], "--span must be at least 1"),
    (["--per-head", "--lazy-method", "rank"], "--per-head only applies with --lazy-method js"),
    (["--ratios", "1.0"], "--ratios must each be in [0, 1)"),
    (["--windows", "100000"], "do not fit"),
    (["--tail", "1"], "--tail must be at least 2"),
    (["--fastv-layer", "1"], "--fastv-layer only applies with --baselines"),
    (["--baselines", "--fastv-layer", "0", "--ratios", "0.5"], "the FastV layer must be in [1, 3]"),
    (["--baselines", "--fastv-layer", "4", "--ratios", "0.5"], "the FastV layer must be in [1, 3]"),
])
def test_bad_input_is_one_line_error(tiny, tmp_path, capsys, flags, message):
    argv = ["perplexity", "--model", str(tiny[0]), "--calib", "1", "--out", str(tmp_path), "--no-progress", *flags]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_per_head_divergence_sees_heads_that_the_head_average_hides():
    # layer 1's two heads are layer 0's swapped: the head averages are identical, the heads are not
    heads = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]])  # [H, N]
    lse = torch.zeros(1, 2)  # [Tq, H], unused by the divergence
    records = [(0, heads[None], lse), (1, heads.flip(0)[None], lse)]  # probabilities [Tq=1, H, N] each
    averaged = divergence_matrix(records, 2)
    per_head = divergence_matrix(records, 2, per_head=True)
    assert float(averaged[0, 1]) == pytest.approx(0.0, abs=1e-7)
    expected = float(js_divergence(heads[0], heads[1]))
    assert float(per_head[0, 1]) == pytest.approx(expected) and expected > 0.1
