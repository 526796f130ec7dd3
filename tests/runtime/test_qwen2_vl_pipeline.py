"""A Qwen2-VL model directory end to end: `Pipeline` (processor, prompt, image grid) against transformers,
`python cli.py` with lazy layers and `--stats`, calibration over images of different sizes, and the serving
engine's multimodal RoPE positions."""

import pytest

import cli
from minilazy.fastv import FastV
from minilazy.generate import generate
from minilazy.lazy.calibrate import calibrate
from minilazy.lazy.plan import LayerPlan
from minilazy.lazy.runtime import LazyRuntime
from minilazy.images import load_image
from minilazy.pipeline import Pipeline
from minilazy.sampler import SamplingParams
from minilazy.serve import Engine
from minilazy.serve.messages import Conversation, conversation, prompt_request
from minilazy.serve.protocol import Message
from tests.runtime.test_qwen2_vl_parity import qwen_reference
from tests.runtime.test_vlm_parity import check_against_reference, random_image
from tests.runtime.tiny_qwen_models import IMAGE_TOKEN, save_qwen
from tests.serve.conftest import image_url


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(transformers model, model directory, image file)."""
    path = tmp_path_factory.mktemp("qwen2_vl")
    ref = save_qwen(path, "qwen2_vl", text=dict(layers=4))
    image = path / "picture.png"
    random_image(44, 30, seed=7).save(image)
    return ref, path, image


def test_pipeline_request_matches_transformers(tiny):
    ref, path, image = tiny
    pipe = Pipeline.load(path, backend="torch")
    request = pipe.request("What is this?", image)
    assert request.input_ids.count(IMAGE_TOKEN) == int(request.image_grid.prod()) // 4 > 0
    check_against_reference(pipe.model, request, qwen_reference(ref, request))


def test_cli_generate_with_lazy_layers_reports_kv_saved(tiny, capsys):
    _, path, image = tiny
    code = cli.main(["--model", str(path), "--image", str(image), "--prompt", "Describe it.", "--backend", "torch",
                     "--max-new-tokens", "6", "--lazy-ratio", "0.5", "--stats"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "lazy layers                 2 of 4" in err
    saved = float(err.split("KV cache saved")[1].split("%")[0])
    assert saved > 0


RUNTIMES = {
    "full": lambda: None,
    "lazy": lambda: LazyRuntime(LayerPlan((0, 0, 2, 2))),
    "lazy + fastv": lambda: LazyRuntime(LayerPlan((0, 1, 2, 2)), fastv=FastV(1, 0.5), exact_image_rows=True),
}


@pytest.mark.parametrize("variant", RUNTIMES)
def test_engine_gives_each_request_its_tokens_alone(tiny, variant):
    """Rows of different requests decode together, each at its own position delta, in chunks of prefill
    between decode steps, with lazy layers and FastV too."""
    _, path, image = tiny
    pipe = Pipeline.load(path, backend="torch")
    requests = [pipe.request("Why?", image), pipe.request("Count the shapes in it.", random_image(20, 60, seed=8)),
                pipe.request("Hello there.")]
    params = SamplingParams(10)
    alone = [generate(pipe.model, [r], params, prefill_chunk=16, decoder_setup=RUNTIMES[variant]()).tokens[0]
             for r in requests]
    engine = Engine(pipe.model, 1 << 30, max_batch=3, stop_ids=(), runtime=RUNTIMES[variant](), prefill_chunk=16)
    seqs = [engine.submit(r, params) for r in requests]
    engine.run_until_idle()
    assert [s.tokens for s in seqs] == alone
    assert len({s.rope_delta for s in seqs}) == 3


def test_a_served_system_message_goes_into_the_prompt(tiny):
    _, path, image = tiny
    pipe = Pipeline.load(path, backend="torch")
    for picture in (None, image):
        own = prompt_request(pipe, Conversation("Be brief.", (), "Why?", picture and load_image(picture)))
        assert own.input_ids == pipe.request("Why?", picture, system="Be brief.").input_ids
        assert own.input_ids != pipe.request("Why?", picture).input_ids  # not the default system message


def test_a_served_message_keeps_its_text_before_its_image(tiny):
    """OpenAI clients often send the text part first; Qwen2-VL's template keeps that order, and so does the server."""
    _, path, image = tiny
    pipe = Pipeline.load(path, backend="torch")
    picture, text = {"type": "image_url", "image_url": {"url": image_url(image)}}, {"type": "text", "text": "Why?"}
    for content, text_first in (([text, picture], True), ([picture, text], False)):
        served = prompt_request(pipe, conversation([Message.model_validate({"role": "user", "content": content})]))
        assert served.input_ids == pipe.request("Why?", image, text_first=text_first).input_ids
    assert pipe.request("Why?", image, text_first=True).input_ids != pipe.request("Why?", image).input_ids


def test_calibration_over_images_of_different_sizes(tiny):
    """The divergence walk pairs each layer's records sample by sample: the samples' image tokens differ."""
    _, path, image = tiny
    pipe = Pipeline.load(path, backend="torch")
    samples = [(image, "Describe it."), (random_image(64, 16, seed=9), "Describe it.")]
    assert len({pipe.request(q, i).input_ids.count(IMAGE_TOKEN) for i, q in samples}) == 2
    plan = calibrate(pipe, samples, ratio=0.5, max_new_tokens=3, progress=False)
    assert len(plan.lazy_layers) == 2 and len(plan.mass_offsets) == 4
