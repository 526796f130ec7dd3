"""Figures derived from the runs (ratios, capacity in a KV budget, bandwidth roofline) and the table.

`runs[variant][batch]` is what `measure.run_minilazy` / `hf.run_transformers`
returned; the reference rows are "full" (minilazy, full attention) and
"transformers".
"""

from __future__ import annotations

from minilazy.bench.measure import spread

FULL, HF = "full", "transformers"


def ratio(a, b):
    return a / b if a and b else None


def summarise(runs: dict, batches: list[int], budget_bytes: int, bandwidth: float, weight_bytes: int) -> dict:
    """Per variant: ratios against full attention and transformers, sequences that fit the budget, roofline share."""
    largest = max(batches)
    summary = {}
    for name, by_batch in runs.items():
        row = {"prefill_tokens_per_s": by_batch[batches[0]]["prefill_tokens_per_s"],
               "prefill_spread": spread(by_batch[batches[0]].get("prefill_tokens_per_s_runs", []))}
        for b in batches:
            row[f"decode_tokens_per_s_b{b}"] = by_batch[b]["decode_tokens_per_s"]
            row[f"decode_spread_b{b}"] = spread(by_batch[b].get("decode_tokens_per_s_runs", []))
            for ref in (FULL, HF):
                if ref in runs:
                    row[f"decode_vs_{ref}_b{b}"] = ratio(by_batch[b]["decode_tokens_per_s"],
                                                         runs[ref][b]["decode_tokens_per_s"])
        for ref in (FULL, HF):
            if ref in runs:
                row[f"prefill_vs_{ref}"] = ratio(row["prefill_tokens_per_s"],
                                                 runs[ref][batches[0]]["prefill_tokens_per_s"])
        per_sequence = by_batch[largest]["kv_bytes_per_sequence"]
        row["kv_bytes_per_sequence"] = per_sequence
        row["kv_saved_vs_full"] = 1 - per_sequence / runs[FULL][largest]["kv_bytes_per_sequence"]
        row["sequences_in_budget"] = budget_bytes // per_sequence if per_sequence else None
        row["sequences_vs_full"] = ratio(row["sequences_in_budget"],
                                         budget_bytes // runs[FULL][largest]["kv_bytes_per_sequence"])
        row["peak_memory_bytes"] = by_batch[largest]["peak_memory_bytes"]
        row.update(roofline(by_batch[batches[0]], bandwidth, weight_bytes))
        spreads = [row[f"decode_spread_b{b}"] for b in batches if row[f"decode_spread_b{b}"] is not None]
        row["decode_spread_max"] = max(spreads) if spreads else None
        summary[name] = row
    return summary


def roofline(run: dict, bandwidth: float, weight_bytes: int) -> dict:
    """Bytes one decode step reads at batch `run['batch']` (weights + the filled part of the KV cache, on average
    over the decode) and the share of the copy bandwidth the measured step time reaches."""
    if not run["decode_tokens_per_s"]:
        return {}
    prompt = run["prompt_tokens"] / run["batch"]
    slots = run.get("cache_slots") or prompt + run["new_tokens"]
    filled = min(1.0, (prompt + run["new_tokens"] / 2) / slots)
    step_bytes = weight_bytes + run["kv_cache_bytes"] * filled
    step_seconds = run["batch"] / run["decode_tokens_per_s"]
    return {"decode_step_bytes_b1": int(step_bytes), "decode_step_seconds_b1": step_seconds,
            "roofline_tokens_per_s_b1": bandwidth / step_bytes,
            "bandwidth_share_b1": step_bytes / step_seconds / bandwidth}


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def table(summary: dict, batches: list[int]) -> str:
    """The results as a fixed-width text table; "dec spread" is the largest (max - min) / median of a row's decode
    speeds over the rounds ("-" after one round)."""
    largest = max(batches)
    hf_batches = sorted({batches[0], largest})  # the smallest and largest batch, once each
    head = (["variant", "prefill t/s"] + [f"dec b{b} t/s" for b in batches]
            + [f"vs full b{largest}"] + [f"vs HF b{b}" for b in hf_batches]
            + ["KV MB/seq", "KV saved", "seqs/budget", "peak MB", "BW share b1", "dec spread"])
    rows = [head]
    for name, r in summary.items():
        rows.append([name, _fmt(r["prefill_tokens_per_s"], ".1f")]
                    + [_fmt(r[f"decode_tokens_per_s_b{b}"], ".2f") for b in batches]
                    + [_fmt(r.get(f"decode_vs_full_b{largest}"), ".2f")]
                    + [_fmt(r.get(f"decode_vs_transformers_b{b}"), ".2f") for b in hf_batches]
                    + [_fmt(r["kv_bytes_per_sequence"] / 2**20, ".1f"), _fmt(r["kv_saved_vs_full"], ".1%"),
                       _fmt(r["sequences_in_budget"], "d"),
                       _fmt(r["peak_memory_bytes"] and r["peak_memory_bytes"] / 2**20, ".0f"),
                       _fmt(r.get("bandwidth_share_b1"), ".1%"), _fmt(r["decode_spread_max"], ".0%")])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
                     for row in rows)
