"""Where the demo model loses "left of": linear probes of a relation question's last token, layer by layer.

    python -m experiments.position_probe --model weights/demo --n 600

The answer to "Is the red circle left of the square?" is read at the prompt's last token, so the
columns of both objects (or their rows, for "above") have to reach it. This takes the residual
stream there at the input of every decoder layer, fits a linear probe to it (least squares onto
one-hot targets) for the row and the column of each of the two objects and for the right answer,
on relation questions about scenes from the training seed range, and scores it on as many held-out
ones; and, on the questions of one relation only, for the coordinate that relation compares (the
second object's column for "left of", its row for "above"). Columns read as well as rows would put
the failure in the comparison; columns that never reach the token put it in what the model gathers
from the image.
"""

from __future__ import annotations

import random

import torch
from tqdm import tqdm

from minilazy.demo.dataset import EVAL_SEED_START, IMAGE_TOKENS, pad_batch
from experiments.probe_command import run_probe
from minilazy.demo.questions import QA, ask, named_objects, relation_subject
from minilazy.demo.scenes import make_scene, render
from minilazy.demo.grounding import StreamCapture
from minilazy.prompts import ImageLayout, build_prompt

TARGETS = ("row a", "column a", "row b", "column b", "answer")
# the same probes fitted and scored on the questions of one relation only: the coordinate it compares
BY_RELATION = {"column b, left of": ("column b", "left of"), "row b, above": ("row b", "above")}
RIDGE = 1e-3  # times the mean of the states' squared norms: keeps the solve well posed


def relation_items(n: int, first_seed: int) -> list[tuple[int, QA]]:
    """`n` relation questions about the scenes from `first_seed` on (scenes without two named objects skipped)."""
    items, seed = [], first_seed
    while len(items) < n:
        if (qa := ask(make_scene(seed), "relation", random.Random(f"position probe {seed}"))) is not None:
            items.append((seed, qa))
        seed += 1
    return items


def targets(seed: int, qa: QA) -> list[int]:
    """The class of each of TARGETS for one question: rows and columns 0-2, the answer 1 for "yes"."""
    by_reference = {ref: obj for obj, ref in named_objects(make_scene(seed))}
    ref_a, _, ref_b = relation_subject(qa.question)
    a, b = by_reference[ref_a], by_reference[ref_b]
    return [a.row, a.col, b.row, b.col, int(qa.answer == "yes")]


@torch.no_grad()
def last_token_states(pipeline, items: list[tuple[int, QA]], batch_size: int = 50) -> torch.Tensor:
    """The residual stream at each prompt's last token at the input of every decoder layer: `[L, N, D]`."""
    model, layers = pipeline.model, range(pipeline.model.config.text.num_hidden_layers)
    per_batch = []
    for i in tqdm(range(0, len(items), batch_size), desc="states", unit="batch"):
        chunk = items[i: i + batch_size]
        layout = ImageLayout(IMAGE_TOKENS)
        prompts = [build_prompt(pipeline.kind, pipeline.tokenizer, qa.question, layout) for _, qa in chunk]
        batch = pad_batch(pipeline.tokenizer, [(ids, [False] * len(ids)) for ids in prompts],
                          pipeline.processor([render(make_scene(seed)) for seed, _ in chunk]))
        last = batch.lengths - 1  # [B]
        capture = StreamCapture(layers)
        model.forward_logits(batch.input_ids, batch.pixel_values, batch.lengths, decoder_setup=capture)
        # each layer's stream [B, T, D] at each row's last token -> [B, D]; stacked -> [L, B, D]
        per_batch.append(torch.stack([capture.streams[layer][torch.arange(len(last)), last].float() for layer in layers]))
    return torch.cat(per_batch, dim=1)  # [L, N, D]


def probe_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor) -> float:
    """Held-out accuracy of a least-squares probe from states `[N, D]` onto the one-hot classes `[N]`."""
    def with_bias(x):
        return torch.cat([x, torch.ones(len(x), 1)], dim=1).double()  # [N, D + 1]

    x = with_bias(train_x)
    one_hot = torch.nn.functional.one_hot(train_y, int(max(train_y.max(), test_y.max())) + 1).double()  # [N, C]
    ridge = RIDGE * float((x * x).sum(1).mean())
    weights = torch.linalg.solve(x.T @ x + ridge * torch.eye(x.shape[1], dtype=x.dtype), x.T @ one_hot)  # [D+1, C]
    return float(((with_bias(test_x) @ weights).argmax(1) == test_y).double().mean())


def position_probe(pipeline, n: int) -> dict:
    """Probe accuracy per layer and target (TARGETS, then BY_RELATION), `n` relation questions about scenes
    from the training seed range to fit on and `n` held-out ones to score on."""
    train, test = relation_items(n, 0), relation_items(n, EVAL_SEED_START)
    train_y, test_y = (torch.tensor([targets(seed, qa) for seed, qa in items]) for items in (train, test))  # [N, 5]
    train_x, test_x = last_token_states(pipeline, train), last_token_states(pipeline, test)  # [L, N, D]
    train_rel, test_rel = ([relation_subject(qa.question)[1] for _, qa in items] for items in (train, test))
    splits = {name: (TARGETS.index(name), slice(None), slice(None)) for name in TARGETS}
    for name, (target, relation) in BY_RELATION.items():
        rows = [torch.tensor([r == relation for r in rel]) for rel in (train_rel, test_rel)]  # [N] bool each
        splits[name] = (TARGETS.index(target), *rows)

    def majority(t, train_rows, test_rows) -> float:
        return float((test_y[test_rows, t] == train_y[train_rows, t].mode().values).double().mean())

    return {"n_train": n, "n_test": n,
            "majority": {name: majority(*split) for name, split in splits.items()},
            "layers": [{name: probe_accuracy(train_x[layer][tr], train_y[tr, t], test_x[layer][te], test_y[te, t])
                        for name, (t, tr, te) in splits.items()} for layer in range(train_x.shape[0])]}


def format_table(result: dict) -> str:
    """One row per layer input, one column per probe, and the commonest class's share."""
    widths = {name: max(10, len(name) + 2) for name in (*TARGETS, *BY_RELATION)}
    lines = [f"{'input of layer':<15}" + "".join(f"{name:>{width}}" for name, width in widths.items())]
    for label, row in [*enumerate(result["layers"]), ("majority", result["majority"])]:
        lines.append(f"{label:<15}" + "".join(f"{row[name]:>{width}.1%}" for name, width in widths.items()))
    lines.append(f"linear probes of the prompt's last token: {result['n_train']} relation questions about scenes "
                 f"from the training seed range, scored on {result['n_test']} held-out ones; a is the first object "
                 f"named, b the second; the last two columns use only the questions of one relation")
    return "\n".join(lines)


def main(argv=None) -> None:
    run_probe(argv, "Linear probes of a relation question's last token in every decoder layer: do both objects' "
                    "rows and columns reach it?", position_probe, format_table, n_default=600,
              n_help="relation questions to fit on (training seed range), and as many to score on (held out)",
              n_min=10)  # a 129-weight probe on fewer questions says nothing


if __name__ == "__main__":
    main()
