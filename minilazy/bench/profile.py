"""Where a decode step's time goes: torch.profiler over a few decode steps of `generate`, ops grouped.

    python cli.py bench --model out/bench-model --profile 16

Groups of self CPU time per decode step:
- `matmul`: the weight matrices (projections, MLP, output head): oneDNN's linear in fp32, aten::mm /
  aten::addmm otherwise;
- `attention`: torch's fused CPU attention and aten::bmm (which only the attention references and the CPU path call);
- `other`: everything else, many small ops (norms, RoPE, cache writes, softmax pieces, sampling).

The profiler adds a cost to every op it records, so `other` (thousands of small ops a step) is an
upper bound and the profiled step is slower than an unprofiled one. CPU only: on a GPU, self CPU
time is launch time, not work.

From full attention's profile follows an estimate of the most a lazy plan can gain in a decode
step (`lazy_ceiling`): a lazy layer still reads the values of every image token and no image keys, so
it saves at most half of its attention bytes; with a share f of the layers lazy and attention a
share a of the step's op time, a step is at most 1 / (1 - f a / 2) times faster. The op time leaves
out Python's own time between ops, which lazy layers do not save either, so the estimate errs
high; the profiler's cost per op (in `other`) and the spread between profiled steps pull it either way.
"""

from __future__ import annotations

import time
from collections import defaultdict

from minilazy.errors import InputError
from minilazy.generate import Request, generate
from minilazy.sampler import SamplingParams

GROUPS = {
    "matmul": ("aten::mm", "aten::addmm", "mkldnn::_linear_pointwise"),
    "attention": ("aten::bmm", "aten::_scaled_dot_product_flash_attention_for_cpu"),
}
STEPS = 8  # decode steps profiled
TOP_OPS = 8  # the largest ops kept per variant


def group_of(op: str) -> str:
    return next((group for group, ops in GROUPS.items() if op in ops), "other")


def profile_decode(model, request: Request, batch: int, runtime_factory, steps: int = STEPS) -> dict:
    """Profile `steps` decode steps of `batch` copies of `request` (after a first, unprofiled one)."""
    from torch.profiler import ProfilerActivity, profile

    if model.device.type != "cpu":
        raise InputError("--profile measures CPU time and runs on the CPU only")
    if steps < 1 or batch < 1:
        raise InputError(f"profiling needs at least one step and one sequence, got steps={steps}, batch={batch}")
    profiler = profile(activities=[ProfilerActivity.CPU])
    clock = {"tokens": 0}

    def on_tokens(_):
        # call k follows token k; decode step k runs between calls k and k + 1
        clock["tokens"] += 1
        if clock["tokens"] == 2:
            profiler.__enter__()
            clock["start"] = time.perf_counter()
        elif clock["tokens"] == 2 + steps:
            profiler.__exit__(None, None, None)
            clock["seconds"] = time.perf_counter() - clock["start"]

    generate(model, [request] * batch, SamplingParams(max_new_tokens=steps + 2), stop_ids=(), on_tokens=on_tokens,
             decoder_setup=runtime_factory())
    per_op = {e.key: (e.self_cpu_time_total / 1e3 / steps, e.count / steps) for e in profiler.key_averages()}
    groups = defaultdict(float)
    for op, (ms, _) in per_op.items():
        groups[group_of(op)] += ms
    top = sorted(per_op.items(), key=lambda item: -item[1][0])[:TOP_OPS]
    return {
        "batch": batch, "steps": steps,
        "ms_per_step": clock["seconds"] * 1e3 / steps,
        "ops_per_step": sum(calls for _, calls in per_op.values()),
        "group_ms_per_step": {group: groups[group] for group in (*GROUPS, "other")},
        "top_ops": [{"op": op, "ms_per_step": ms, "calls_per_step": calls} for op, (ms, calls) in top],
    }


def lazy_ceiling(full: dict, lazy_share: float) -> dict:
    """The estimate above for a plan with `lazy_share` of its layers lazy, from full attention's profile `full`."""
    groups = full["group_ms_per_step"]
    attention_share = groups["attention"] / sum(groups.values())
    return {"lazy_share": lazy_share, "attention_share": attention_share,
            "max_speedup": 1 / (1 - lazy_share * attention_share / 2)}


def ceiling_lines(ceilings: dict[str, dict]) -> list[str]:
    """One line per variant of `ceilings` (variant name -> `lazy_ceiling`): its estimated ceiling against full attention."""
    return [f"{name}: at most about {c['max_speedup']:.2f}x full attention's decode step ({c['lazy_share']:.0%} of "
            f"the layers lazy, attention {c['attention_share']:.0%} of full attention's op time)"
            for name, c in ceilings.items()]


def table(profiles: dict[str, dict]) -> str:
    """One row per variant: profiled ms per step, its groups, the op calls a step, and its largest small ops."""
    lines = [f"{'variant':<16} {'ms/step':>8} {'matmul':>8} {'attention':>10} {'other':>8} {'ops/step':>9}  "
             f"largest other ops (ms/step)"]
    for name, p in profiles.items():
        g = p["group_ms_per_step"]
        others = [o for o in p["top_ops"] if group_of(o["op"]) == "other"][:3]
        listed = ", ".join(f"{o['op'].removeprefix('aten::')} {o['ms_per_step']:.1f}" for o in others)
        lines.append(f"{name:<16} {p['ms_per_step']:>8.1f} {g['matmul']:>8.1f} {g['attention']:>10.1f} "
                     f"{g['other']:>8.1f} {p['ops_per_step']:>9.0f}  {listed}")
    return "\n".join(lines)
