"""The engine under a lazy plan, FastV, VTW and both: the tokens `generate()` gives each request alone with the
same runtime, requests priced at the bytes of the cache `generate()` allocates (the docs' formula), a budget
that admits more lazy sequences than full ones, and rows whose tables are cleared when a sequence ends."""

import pytest

from minilazy.errors import InputError
from minilazy.fastv import VTW, FastV
from minilazy.generate import generate
from minilazy.lazy.plan import LayerPlan
from minilazy.lazy.runtime import LazyRuntime
from minilazy.sampler import SamplingParams
from minilazy.serve import Engine
from tests.serve.conftest import FASTV_PLAN, PLAN, QUESTIONS

MAX_NEW = 12
BUDGET = 1 << 30
OFFSETS = [[0.25, -0.5, 0.0, 0.5] if PLAN.is_lazy(layer) else [] for layer in range(12)]
VARIANTS = {
    "lazy": lambda: LazyRuntime(PLAN),
    "lazy, exact image rows, mass offsets": lambda: LazyRuntime(LayerPlan(PLAN.anchors, mass_offsets=OFFSETS),
                                                                exact_image_rows=True),
    "lazy, no fast decode": lambda: LazyRuntime(PLAN, fast_decode=False),
    "lazy, scope all": lambda: LazyRuntime(LayerPlan((0, 0, 2, 2, 4, 4, 6, 6, 8, 8, 10, 10), scope="all")),
    "fastv": lambda: LazyRuntime(fastv=FastV(2, 0.5)),
    "vtw": lambda: LazyRuntime(fastv=VTW(6)),
    "vtw at the last layer": lambda: LazyRuntime(fastv=VTW(12)),
    "lazy + fastv": lambda: LazyRuntime(FASTV_PLAN, fastv=FastV(2, 0.5), exact_image_rows=True),
}


@pytest.fixture(scope="module")
def requests(pipeline):
    return [pipeline.request(question, image) for image, question in QUESTIONS]


def alone(pipeline, request, params, runtime):
    return generate(pipeline.model, [request], params, stop_ids=pipeline.stop_ids, decoder_setup=runtime)


def assert_idle(engine):
    stats = engine.stats()
    assert (stats.running, stats.waiting, stats.kv_bytes_used) == (0, 0, 0)
    assert sorted(engine.scheduler.free_rows) == list(range(engine.rows.rows))
    for tables in engine.rows.tables:  # released rows hold no image or text keys
        assert not tables.is_image.any() and not tables.n_text.any()
    assert not engine.rows.dropped.any()


@pytest.mark.parametrize("variant", VARIANTS)
def test_same_tokens_and_bytes_as_generate_alone(pipeline, requests, variant):
    """Five requests (one text-only), three rows: they join at different steps and run beside different
    neighbours; each gets what `generate()` gives it alone, and is priced at the bytes of its cache there."""
    params = SamplingParams(MAX_NEW)
    expected = [alone(pipeline, r, params, VARIANTS[variant]()) for r in requests]
    engine = Engine(pipeline.model, BUDGET, max_batch=3, stop_ids=pipeline.stop_ids, runtime=VARIANTS[variant]())
    seqs = []
    for request in requests:
        seqs.append(engine.submit(request, params))
        engine.step()
        engine.step()
    engine.run_until_idle()
    assert [s.tokens for s in seqs] == [e.tokens[0] for e in expected]
    assert [s.kv_bytes for s in seqs] == [e.stats.kv_cache_bytes for e in expected]
    assert engine.stats().running_peak >= 2  # they ran in one batch
    assert_idle(engine)


@pytest.mark.parametrize("variant", ["lazy, exact image rows, mass offsets", "lazy + fastv"])
def test_a_row_prefilled_below_a_running_one_decodes_with_its_own_image(pipeline, requests, variant):
    """Row 0 frees while row 1 decodes; the next request takes row 0 and prefills in chunks between row 1's
    steps, the batch's rows unchanged: once it is in, the decode steps see its image tokens."""
    engine = Engine(pipeline.model, BUDGET, max_batch=2, stop_ids=(), runtime=VARIANTS[variant](),
                    prefill_chunk=16)
    first = engine.submit(requests[3], SamplingParams(2))
    running = engine.submit(requests[0], SamplingParams(40))
    while not first.finished:
        engine.step()
    assert not running.finished
    late = engine.submit(requests[1], SamplingParams(MAX_NEW))  # a description: it reads the image
    engine.step()
    assert (late.row, running.row) == (0, 1) and not running.finished
    engine.run_until_idle()
    expected = generate(pipeline.model, [requests[1]], SamplingParams(MAX_NEW), stop_ids=(),
                        decoder_setup=VARIANTS[variant]())
    assert late.tokens == expected.tokens[0]


def test_sampled_tokens_equal_generate_alone(pipeline, requests):
    params = [SamplingParams(MAX_NEW, 0.8, top_p=0.9, seed=i) for i in range(len(requests))]
    make = VARIANTS["lazy + fastv"]
    expected = [alone(pipeline, r, p, make()).tokens[0] for r, p in zip(requests, params)]
    engine = Engine(pipeline.model, BUDGET, max_batch=4, stop_ids=pipeline.stop_ids, runtime=make())
    seqs = [engine.submit(r, p) for r, p in zip(requests, params)]
    engine.run_until_idle()
    assert [s.tokens for s in seqs] == expected


def test_prices_follow_the_kv_formula(pipeline, requests):
    """Per token and layer: 2·G·d bytes in an active layer, G·d for an image token in a lazy layer; FastV's
    layers from K on hold only the kept image tokens, VTW's none."""
    cfg = pipeline.config.text
    value = cfg.num_key_value_heads * cfg.head_dim * pipeline.model.dtype.itemsize  # bytes of one key or value
    layers, request = cfg.num_hidden_layers, requests[0]
    n = len(request.input_ids)
    n_img = request.input_ids.count(pipeline.config.image_token_id)
    slots = n + MAX_NEW
    kept = round(n_img * 0.5)

    def price(runtime=None):
        return Engine(pipeline.model, BUDGET, max_batch=1, runtime=runtime).check(request, SamplingParams(MAX_NEW))

    assert n_img > 0 and price() == 2 * layers * slots * value
    assert price(LazyRuntime(PLAN)) == (2 * layers * slots - len(PLAN.lazy_layers) * n_img) * value
    assert price(LazyRuntime(fastv=FastV(2, 0.5))) == 2 * (2 * slots + 10 * (slots - n_img + kept)) * value
    assert price(LazyRuntime(fastv=VTW(6))) == 2 * (6 * slots + 6 * (slots - n_img)) * value


@pytest.mark.parametrize("variant", ["lazy", "fastv"])
def test_the_same_budget_admits_more_lazy_sequences_exactly_as_many_as_fit(pipeline, requests, variant):
    request, params = requests[1], SamplingParams(MAX_NEW)  # a long answer: nobody finishes in the first step
    full_need = Engine(pipeline.model, BUDGET, max_batch=1).check(request, params)
    budget = 2 * full_need + full_need // 2  # two full-attention sequences fit
    full = Engine(pipeline.model, budget, max_batch=8, stop_ids=pipeline.stop_ids)
    lazy = Engine(pipeline.model, budget, max_batch=8, stop_ids=pipeline.stop_ids, runtime=VARIANTS[variant]())
    need = lazy.check(request, params)
    fit = budget // need
    assert fit > 2
    for engine, running in ((full, 2), (lazy, fit)):
        seqs = [engine.submit(request, params) for _ in range(fit + 1)]
        engine.step()
        stats = engine.stats()
        assert (stats.running, stats.waiting) == (running, fit + 1 - running)
        assert stats.kv_bytes_used == running * seqs[0].kv_bytes <= budget
        engine.run_until_idle()
        assert engine.stats().running_peak == running
    expected = alone(pipeline, request, params, VARIANTS[variant]()).tokens[0]
    assert all(s.tokens == expected for s in seqs)
    assert_idle(lazy)


def test_a_cancel_returns_the_bytes_and_clears_the_row(pipeline, requests):
    make, params = VARIANTS["lazy + fastv"], SamplingParams(MAX_NEW)
    engine = Engine(pipeline.model, BUDGET, max_batch=2, stop_ids=pipeline.stop_ids, runtime=make())
    first = engine.submit(requests[1], params)
    other = engine.submit(requests[4], params)
    engine.step()
    assert first.row == 0 and engine.rows.tables[0].is_image[0].any() and engine.rows.dropped[0] > 0
    engine.cancel(first)
    engine.step()
    assert first.finish_reason == "cancelled" and engine.stats().kv_bytes_used == other.kv_bytes
    assert not engine.rows.tables[0].is_image[0].any() and engine.rows.dropped[0] == 0
    engine.run_until_idle()
    assert other.tokens == alone(pipeline, requests[4], params, make()).tokens[0]  # beside an idle row 0
    assert_idle(engine)


def test_a_cheap_request_longer_than_a_row_is_refused(pipeline, requests):
    """Rows are as long as the budget holds at full attention's price; a request VTW makes cheap enough for
    the budget may still not fit a row, and is refused with a reason rather than admitted."""
    request = requests[0]
    slots = len(request.input_ids) + MAX_NEW - 1
    budget = slots * Engine(pipeline.model, BUDGET, max_batch=1).rows.bytes_per_token
    engine = Engine(pipeline.model, budget, max_batch=1, runtime=LazyRuntime(fastv=VTW(1)))
    assert engine.rows.slots == slots and engine.rows.need(request, MAX_NEW) < budget
    with pytest.raises(InputError, match=f"exceeds the {slots} slots of a cache row"):
        engine.submit(request, SamplingParams(MAX_NEW))


@pytest.mark.parametrize("variant", [None, "lazy + fastv"])
def test_max_len_sets_the_rows_and_so_the_storage(pipeline, requests, variant):
    """`max_len` (serve --max-model-len) bounds the storage allocated at start to rows x max_len slots,
    whatever the budget; a request longer than a row is refused, one that fits runs as generate() runs it."""
    request, params = requests[0], SamplingParams(MAX_NEW)
    fits = len(request.input_ids) + MAX_NEW
    runtime = None if variant is None else VARIANTS[variant]
    engine = Engine(pipeline.model, BUDGET, max_batch=3, stop_ids=pipeline.stop_ids,
                    runtime=runtime and runtime(), max_len=fits)
    plain = Engine(pipeline.model, BUDGET, max_batch=3, runtime=runtime and runtime())
    assert engine.rows.slots == fits < plain.rows.slots
    assert engine.rows.cache.nbytes * plain.rows.slots == plain.rows.cache.nbytes * fits
    seq = engine.submit(request, params)
    engine.run_until_idle()
    assert seq.tokens == alone(pipeline, request, params, runtime and runtime()).tokens[0]
    with pytest.raises(InputError, match=f"exceeds the {fits} slots of a cache row"):
        engine.submit(request, SamplingParams(MAX_NEW + 1))
