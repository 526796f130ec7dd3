"""The benchmark command on a tiny Idefics3 model, and the bench-model builder on shrunken shapes."""

import json

import pytest
import torch

from minilazy.bench import profile
from minilazy.bench.measure import combine_repeats, spread
from minilazy.bench.variants import even_plan
from tests.runtime.tiny_models import TOKENIZER_VOCAB, save_idefics3, save_llama, save_tokenizer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_idefics3(tmp_path_factory):
    path = tmp_path_factory.mktemp("idefics3")
    save_idefics3(path, image_size=32, patch=8, scale=2, text={"vocab": 128, "layers": 5})
    save_tokenizer(path, bos=False)
    return path


def test_bench_writes_every_figure(tiny_idefics3, tmp_path, capsys):
    from cli import main

    out = tmp_path / "bench"
    rc = main(["bench", "--model", str(tiny_idefics3), "--backend", "torch", "--batch-sizes", "1", "2",
               "--new-tokens", "3", "--ratios", "0.4", "0.6", "--plans", "calibrated", "--budget-gb", "0.001",
               "--threads", "1", "--repeats", "2", "--profile", "2", "--vtw-layer", "1", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "command: python cli.py bench" in printed and "transformers" in printed
    assert "where a decode step's time goes at batch 2" in printed
    data = json.loads((out / "bench.json").read_text())
    assert (out / "bench.png").stat().st_size > 1000
    names = ["full", "lazy-0.4", "lazy-0.4-nofast", "lazy-0.6", "lazy-0.6-nofast", "fastv", "lazy-0.6+fastv",
             "vtw-1", "transformers"]
    assert list(data["runs"]) == names and list(data["summary"]) == names
    assert data["machine"]["copy_bandwidth_bytes_per_s"] > 0 and data["vision_seconds"] > 0
    for name in names:
        for b in ("1", "2"):
            run = data["runs"][name][b]
            assert run["decode_steps"] == 2 and run["prefill_tokens_per_s"] > 0 and run["decode_tokens_per_s"] > 0
            assert run["kv_cache_bytes"] > 0 and run["repeats"] == 2
            assert len(run["decode_tokens_per_s_runs"]) == 2
            assert run["decode_tokens_per_s"] == pytest.approx(sum(run["decode_tokens_per_s_runs"]) / 2)
        row = data["summary"][name]
        for key in ("decode_vs_full_b2", "decode_vs_transformers_b1", "prefill_vs_transformers", "sequences_in_budget",
                    "kv_saved_vs_full", "bandwidth_share_b1", "roofline_tokens_per_s_b1", "decode_spread_b2",
                    "prefill_spread", "decode_spread_max"):
            assert row[key] is not None, (name, key)
    summary = data["summary"]
    assert summary["full"]["decode_vs_full_b2"] == 1.0 and summary["full"]["kv_saved_vs_full"] == 0
    assert summary["lazy-0.6"]["kv_saved_vs_full"] > summary["lazy-0.4"]["kv_saved_vs_full"] > 0
    assert summary["lazy-0.6"]["sequences_in_budget"] > summary["full"]["sequences_in_budget"]
    assert summary["vtw-1"]["kv_saved_vs_full"] > summary["fastv"]["kv_saved_vs_full"]  # FastV at 2 keeps half
    # every minilazy variant without lazy layers or pruning generates the same tokens as transformers
    assert data["runs"]["full"]["1"]["first_tokens"] == data["runs"]["transformers"]["1"]["first_tokens"]
    assert data["runs"]["lazy-0.6"]["1"]["first_tokens"] == data["runs"]["lazy-0.6-nofast"]["1"]["first_tokens"]
    assert list(data["profile"]) == ["2"] and list(data["profile"]["2"]) == names[:-1]  # every minilazy variant
    for p in data["profile"]["2"].values():
        groups = p["group_ms_per_step"]
        assert (p["batch"], p["steps"]) == (2, profile.STEPS) and p["ms_per_step"] > 0 and p["ops_per_step"] > 10
        assert groups["matmul"] > 0 and groups["attention"] > 0 and groups["other"] > 0
        assert p["top_ops"][0]["ms_per_step"] >= p["top_ops"][-1]["ms_per_step"]
    ceilings = data["lazy_ceiling"]["2"]
    assert list(ceilings) == ["lazy-0.4", "lazy-0.4-nofast", "lazy-0.6", "lazy-0.6-nofast"]
    assert ceilings["lazy-0.6"]["max_speedup"] > ceilings["lazy-0.4"]["max_speedup"] > 1
    assert f"lazy-0.6: at most about {ceilings['lazy-0.6']['max_speedup']:.2f}x full attention's decode step" in printed


def test_bench_on_a_text_only_model(tmp_path, capsys):
    """No image: the lazy plans' image keys are absent, and transformers' reference is its causal LM."""
    from cli import main

    model = tmp_path / "llama"
    save_llama(model, vocab=TOKENIZER_VOCAB, hidden=64, layers=4)
    save_tokenizer(model, bos=False)
    rc = main(["bench", "--model", str(model), "--backend", "torch", "--new-tokens", "3", "--batch-sizes", "1",
               "--ratios", "0.5", "--threads", "1", "--out", str(tmp_path / "bench")])
    assert rc == 0, capsys.readouterr().err
    data = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert data["inputs"]["image_tokens"] == 0 and data["vision_seconds"] is None
    assert "evenly spaced" in capsys.readouterr().err  # nothing to calibrate the default plans on
    assert data["runs"]["full"]["1"]["first_tokens"] == data["runs"]["transformers"]["1"]["first_tokens"]


def test_lazy_ceiling_is_the_attention_bytes_lazy_layers_skip():
    # attention 40 of 100 ms of op time; 80% of the layers lazy, each skipping half its attention: 16 ms less
    full = {"ms_per_step": 130.0, "group_ms_per_step": {"matmul": 50.0, "attention": 40.0, "other": 10.0}}
    ceiling = profile.lazy_ceiling(full, 0.8)
    assert ceiling["attention_share"] == pytest.approx(0.4)
    assert ceiling["max_speedup"] == pytest.approx(100 / 84)
    assert profile.lazy_ceiling(full, 0.0)["max_speedup"] == 1.0


def test_profile_groups_ops():
    assert profile.group_of("aten::mm") == "matmul" and profile.group_of("aten::bmm") == "attention"
    assert profile.group_of("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert profile.group_of("aten::rms_norm") == "other"


def test_even_plan_spacing_and_fastv():
    plan = even_plan(10, 0.6)
    assert len(plan.lazy_layers) == 6 and plan.anchors[0] == 0
    with_fastv = even_plan(10, 0.8, fastv_layer=2)
    assert not with_fastv.is_lazy(1) and not with_fastv.is_lazy(2)


def test_bench_model_builder_loads_in_minilazy_and_transformers(tmp_path):
    from transformers import Idefics3ForConditionalGeneration

    from minilazy.pipeline import Pipeline
    from weights.build_bench_model import VisionShape, build_bench_model

    text_dir = tmp_path / "text"
    save_llama(text_dir, vocab=96, hidden=64, layers=2, tie=True)
    save_tokenizer(text_dir, bos=False)
    vision = VisionShape(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         patch_size=8, image_size=32, scale_factor=2, max_tiles_per_side=2)
    out = build_bench_model(tmp_path / "bench", text_dir, vision, vocab_multiple=64)
    config = json.loads((out / "config.json").read_text())
    assert config["text_config"]["vocab_size"] == 128 and not config["tie_word_embeddings"]

    pipeline = Pipeline.load(out)
    tokenizer = pipeline.tokenizer
    assert config["image_token_id"] == tokenizer.token_to_id("<image>")
    assert tokenizer.token_to_id("<row_2_col_2>") is not None and pipeline.config.image_tokens_per_image == 4
    text_weights = pipeline.model.decoder.layers[1]["self_attn.q_proj.weight"]
    reference = Idefics3ForConditionalGeneration.from_pretrained(text_dir.parent / "bench").eval()
    hf_q = reference.model.text_model.layers[1].self_attn.q_proj.weight
    assert torch.equal(text_weights, hf_q)
    from transformers import LlamaForCausalLM

    source = LlamaForCausalLM.from_pretrained(text_dir)
    assert torch.equal(source.model.layers[1].self_attn.q_proj.weight, hf_q)  # the decoder is the source's
    assert torch.equal(reference.lm_head.weight[:96], source.lm_head.weight)  # untied, its rows kept

    from PIL import Image

    request = pipeline.request("What is it?", Image.new("RGB", (40, 40), (200, 30, 30)))
    ids = torch.tensor([request.input_ids])
    with torch.no_grad():
        expected = reference(input_ids=ids, pixel_values=request.pixel_values[None]).logits[0, -1]
    actual = pipeline.model.forward_logits(ids, request.pixel_values, torch.tensor([ids.shape[1]]))[0, -1]
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)


def test_repeated_runs_combine_into_medians_and_a_spread():
    def record(prefill, decode, peak):
        return {"prefill_seconds": 1 / prefill, "decode_seconds": 1 / decode, "prefill_tokens_per_s": prefill,
                "decode_tokens_per_s": decode, "peak_memory_bytes": peak, "kv_cache_bytes": 7}

    combined = combine_repeats([record(100, 10, 5), record(300, 12, None), record(200, 16, 9)])
    assert combined["prefill_tokens_per_s"] == 200 and combined["decode_tokens_per_s"] == 12
    assert combined["decode_tokens_per_s_runs"] == [10, 12, 16] and combined["repeats"] == 3
    assert combined["peak_memory_bytes"] == 9 and combined["kv_cache_bytes"] == 7
    assert spread([10, 12, 16]) == pytest.approx(0.5)
    assert spread([10]) is None


def test_bench_refuses_a_profile_batch_of_zero_in_one_line(tiny_idefics3, tmp_path, capsys):
    from cli import main

    rc = main(["bench", "--model", str(tiny_idefics3), "--profile", "0", "--out", str(tmp_path)])
    assert rc == 2
    assert capsys.readouterr().err.strip() == "error: --profile takes positive batch sizes, got [0]"


def test_table_names_each_transformers_ratio_once():
    from minilazy.bench.report import table

    row = {"prefill_tokens_per_s": 100.0, "decode_tokens_per_s_b4": 10.0, "decode_vs_full_b4": 1.0,
           "decode_vs_transformers_b4": 1.5, "kv_bytes_per_sequence": 2**20, "kv_saved_vs_full": 0.0,
           "sequences_in_budget": 3, "peak_memory_bytes": None, "bandwidth_share_b1": None, "decode_spread_max": None}
    head, line = table({"full": row}, [4]).splitlines()
    assert head.split().count("HF") == 1 and "vs HF b4" in head and "vs HF b1" not in head
    assert "1.50" in line
