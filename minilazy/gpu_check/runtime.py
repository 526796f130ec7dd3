"""Part 2: whole models on the backend under test against the reference backend on the CPU.

The demo model (weights/demo) and tiny random LLaVA, Idefics3, Qwen2.5-VL and Qwen2-VL checkpoints
built with transformers (tests/runtime/tiny_models.py, tests/runtime/tiny_qwen_models.py; the Qwen
towers take images of two sizes, with multimodal RoPE in the decoder, 2D RoPE in the tower and, in
Qwen2.5-VL's, window attention beside one full-attention block), each with a batch of two requests
of different lengths, under full
attention, lazy plans (Q Cache depth R = 1 and R = 2, scopes `visual` and `all`), FastV, and lazy
layers with FastV. Each run compares the logits of the whole prompt (teacher-forced, where FastV
does not prune it) and of every greedy step, and the greedy tokens, which must be equal. Near the
time limit no new model is started: the ones left are reported as skipped, and the part fails.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

from minilazy.fastv import FastV
from minilazy.generate import generate, image_grids, padded_prompts
from minilazy.gpu_check.setting import Setting, machine, write_json
from minilazy.lazy.plan import LayerPlan
from minilazy.lazy.runtime import LazyRuntime
from minilazy.model import Model
from minilazy.pipeline import Pipeline
from minilazy.sampler import SamplingParams

REPO = Path(__file__).resolve().parents[2]
STEPS, DRY_STEPS = 8, 3  # greedy tokens per request
ATOL = RTOL = 1e-3  # fp32 logits, GPU against CPU: other summation orders, IEEE products on both
TINY_TEXT = dict(hidden=32, layers=6, heads=4, kv_heads=2)  # six layers: room for R = 2 plans and FastV at 2
FASTV = FastV(layer=2, ratio=0.5)
DRY_RUNS = ("full", "lazy-r2-all", "lazy-r1-visual+fastv")  # the dry run's share: the reference backend is slow
RESERVE = 0.15  # share of the time limit in which no new model starts


def plans(num_layers: int) -> dict[str, LayerPlan | None]:
    """The lazy plans checked, built directly (no calibration): every other layer lazy at R = 1; at R = 2 every
    third layer inherits from the active layer two below it, past one active layer."""
    r1 = tuple(layer if layer % 2 == 0 else layer - 1 for layer in range(num_layers))
    r2 = tuple(layer if layer % 3 != 2 else layer - 2 for layer in range(num_layers))
    return {
        "lazy-r1-visual": LayerPlan(r1, 1, "visual"), "lazy-r2-visual": LayerPlan(r2, 2, "visual"),
        "lazy-r1-all": LayerPlan(r1, 1, "all"), "lazy-r2-all": LayerPlan(r2, 2, "all"),
    }


def runtimes(num_layers: int) -> dict:
    """name -> a function giving a fresh `decoder_setup` (None: plain attention) and whether FastV prunes."""
    out = {"full": (lambda: None, False)}
    out.update({name: (lambda p=plan: LazyRuntime(p), False) for name, plan in plans(num_layers).items()})
    out["fastv"] = (lambda: LazyRuntime(fastv=FASTV), True)
    # FastV at K = 2: layers 0 and 1 active, lazy layers from 2 on inherit from layers at or after 2
    anchors = tuple(layer if layer < 2 or layer % 2 == 0 else layer - 1 for layer in range(num_layers))
    out["lazy-r1-visual+fastv"] = (lambda: LazyRuntime(LayerPlan(anchors), fastv=FASTV), True)
    return out


def models(tmp: Path) -> dict:
    """name -> (checkpoint dir, two requests of different lengths)."""
    from tests.runtime.test_qwen2_vl_parity import qwen_request
    from tests.runtime.test_vlm_parity import IDEFICS3_TILE, LLAVA_IMAGE, idefics3_request, llava_request, random_image
    from tests.runtime.tiny_models import TOKENIZER_VOCAB, save_idefics3, save_llava, tiny_tokenizer
    from tests.runtime.tiny_qwen_models import save_qwen

    demo = Pipeline.load(REPO / "weights" / "demo", backend="torch")
    text = dict(vocab=TOKENIZER_VOCAB, **TINY_TEXT)
    save_llava(tmp / "llava", image_size=LLAVA_IMAGE, patch=7, vision_hidden=32, vision_layers=2, text=text)
    save_idefics3(tmp / "idefics3", image_size=IDEFICS3_TILE, patch=8, scale=2, vision_hidden=32, vision_layers=2,
                  text=text)
    qwen = {}  # GQA decoders of 48 wide (the towers project to 48); images of 6 x 4 and 3 x 7 merged tokens
    for model_type in ("qwen2_5_vl", "qwen2_vl"):
        save_qwen(tmp / model_type, model_type, text=dict(layers=TINY_TEXT["layers"], kv_heads=2))
        qwen[model_type] = (tmp / model_type, [qwen_request("What is it?", [random_image(48, 32, 5)]),
                                               qwen_request("Why is it there at all?", [random_image(24, 56, 6)])])
    return {
        "demo": (demo.model_dir, [demo.request("What color is the triangle?", REPO / "examples" / "scene_1.png"),
                                  demo.request("Describe the image.", REPO / "examples" / "scene_2.png")]),
        "llava": (tmp / "llava", [llava_request(tiny_tokenizer(), "What is it?", seed=0),
                                  llava_request(tiny_tokenizer(), "Why is it there at all?", seed=1)]),
        "idefics3": (tmp / "idefics3", [
            idefics3_request(tiny_tokenizer(bos=False), "Why?", random_image(60, 40, 3), split=True),
            idefics3_request(tiny_tokenizer(bos=False), "What is in it?", random_image(30, 30, 4), split=False)]),
        **qwen,
    }


def outputs(model: Model, requests, factory, steps: int, prunes: bool) -> dict:
    """Prompt logits (None under FastV), the logits of every step, and the greedy tokens, on the CPU."""
    prompt = None
    if not prunes:
        ids, lengths = padded_prompts(model, requests)  # [B, T] right-padded, [B]
        pixels = torch.cat([r.pixel_values for r in requests])
        with torch.no_grad():
            logits = model.forward_logits(ids, pixels, lengths, decoder_setup=factory(),
                                          image_grid=image_grids(requests))  # [B, T, V]
        prompt = [logits[b, :len(r.input_ids)].float().cpu() for b, r in enumerate(requests)]
    steps_logits = []
    out = generate(model, requests, SamplingParams(max_new_tokens=steps), stop_ids=(), decoder_setup=factory(),
                   on_logits=lambda logits: steps_logits.append(logits.float().cpu()))
    return {"prompt": prompt, "steps": torch.stack(steps_logits), "tokens": out.tokens}  # steps [N, B, V]


def max_diff(got, expected) -> tuple[float, bool]:
    diff = (got - expected).abs().max().item() if got.numel() else 0.0
    return diff, bool(torch.allclose(got, expected, atol=ATOL, rtol=RTOL))


def compare(got: dict, expected: dict) -> dict:
    record = {"tokens_equal": got["tokens"] == expected["tokens"], "tokens": got["tokens"],
              "expected_tokens": expected["tokens"]}
    record["steps_max_abs_diff"], steps_close = max_diff(got["steps"], expected["steps"])
    prompt_close = True
    if got["prompt"] is not None:
        diffs = [max_diff(g, e) for g, e in zip(got["prompt"], expected["prompt"])]
        record["prompt_max_abs_diff"] = max(d for d, _ in diffs)
        prompt_close = all(close for _, close in diffs)
    record["passed"] = record["tokens_equal"] and steps_close and prompt_close
    return record


def run(out_dir: Path, setting: Setting) -> tuple[bool, list[str]]:
    deadline = time.perf_counter() + (1 - RESERVE) * setting.budget_s
    steps = DRY_STEPS if setting.dry_run else STEPS
    data = {"subject": {"backend": setting.subject, "device": setting.device.type},
            "baseline": {"backend": setting.baseline, "device": "cpu"}, "dtype": "fp32", "steps": steps,
            "atol": ATOL, "rtol": RTOL, "machine": machine(), "models": {}, "skipped": []}
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (model_dir, requests) in models(Path(tmp)).items():
            start = time.perf_counter()
            if start > deadline:
                data["skipped"].append(name)
                continue
            subject = Model.from_pretrained(model_dir, backend=setting.subject)
            baseline = Model.from_pretrained(model_dir, backend=setting.baseline, device="cpu")
            layers = subject.config.text.num_hidden_layers
            results = data["models"][name] = {"layers": layers, "prompt_tokens": [len(r.input_ids) for r in requests],
                                              "runs": {}}
            for run_name, (factory, prunes) in runtimes(layers).items():
                if setting.dry_run and run_name not in DRY_RUNS:
                    continue
                try:
                    results["runs"][run_name] = compare(outputs(subject, requests, factory, steps, prunes),
                                                        outputs(baseline, requests, factory, steps, prunes))
                except Exception as err:  # noqa: BLE001 - one failing run is reported, the others still run
                    results["runs"][run_name] = {"passed": False, "error": f"{type(err).__name__}: {err}"}
                print(f"{name} {run_name}: {results['runs'][run_name]}", file=sys.stderr, flush=True)
                write_json(out_dir / "runtime.json", data)
            runs = results["runs"]
            failed = [n for n, r in runs.items() if not r["passed"]]
            worst = max((r.get(k, 0.0) for r in runs.values() for k in ("prompt_max_abs_diff", "steps_max_abs_diff")),
                        default=0.0)
            lines.append(f"   {name:<10} {len(runs) - len(failed)}/{len(runs)} runs pass, max |logit diff| "
                         f"{worst:.2e}, {time.perf_counter() - start:.0f} s" + (f"; FAILED: {', '.join(failed)}"
                                                                                  if failed else ""))
    ok = not data["skipped"] and all(r["passed"] for m in data["models"].values() for r in m["runs"].values())
    data["passed"] = ok
    write_json(out_dir / "runtime.json", data)
    header = f"   {setting.subject} on {setting.device.type} vs {setting.baseline} on cpu, fp32, {steps} greedy steps"
    skipped = [f"   skipped at the time limit: {', '.join(data['skipped'])}"] if data["skipped"] else []
    return ok, [header] + lines + skipped
