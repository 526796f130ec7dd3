"""Is "left of" harder than "above" for the demo model because of the image's direction?

    python -m experiments.relation_probe --model weights/demo --n 1000

The held-out relation questions are asked twice: about the scene, and about the scene transposed
(its rows become columns) with "left of" and "above" swapped in the question, which keeps every
right answer right. If a model answers by the image's vertical direction (the image tokens enter
the decoder row by row, so "above" is mostly an order of token positions), its errors move with
the image: the pairs it missed as "left of" it gets right as "above" on the transposed scene, and
the other way round. The table gives accuracy per relation case of the original question
(`minilazy.demo.evaluate.relation_case`) for both views.
"""

from __future__ import annotations

from PIL import Image
from tqdm import tqdm

from minilazy.demo.evaluate import RELATION_CASES, greedy_answers, held_out_questions, relation_case, score_cases
from experiments.probe_command import run_probe
from minilazy.demo.questions import FAMILIES, RELATIONS, relation_subject
from minilazy.demo.scenes import make_scene

SWAP = dict(zip(RELATIONS, reversed(RELATIONS)))  # "left of" <-> "above"
FEWEST = FAMILIES.index("relation") + 1  # held-out questions that hold a relation one (families rotate)


def transposed_view(question: str, image: Image.Image) -> tuple[str, Image.Image]:
    """The question with "left of" and "above" swapped, about the image mirrored along its diagonal."""
    ref_a, relation, ref_b = relation_subject(question)
    return f"Is the {ref_a} {SWAP[relation]} the {ref_b}?", image.transpose(Image.Transpose.TRANSPOSE)


def probe(pipeline, n: int, batch_size: int = 50) -> dict:
    """Accuracy per relation case on the scenes as they are and transposed, over the relation questions
    among `n` held-out questions."""
    items = [(seed, qa) for seed, qa in held_out_questions(n) if qa.family == "relation"]
    if not items:
        raise ValueError(f"no relation question among {n} held-out questions; ask for more (--n {FEWEST} or more)")
    cases = [relation_case(make_scene(seed), qa.question) for seed, qa in items]
    result = {"n_relation": len(items)}
    for name, view in (("as drawn", None), ("transposed", transposed_view)):
        answers = []
        for i in tqdm(range(0, len(items), batch_size), desc=name, unit="batch"):
            answers += greedy_answers(pipeline, items[i: i + batch_size], 4, view=view)
        rows = [(case, qa.answer, answer) for case, (_, qa), answer in zip(cases, items, answers)]
        result[name] = score_cases(rows, RELATION_CASES)
    return result


def format_table(result: dict) -> str:
    lines = [f"{'case of the original question':<30} {'as drawn':>12} {'transposed':>12}"]
    for case in RELATION_CASES:
        cells = [f"{row['correct']}/{row['total']}" for row in (result["as drawn"][case], result["transposed"][case])]
        lines.append(f"{case:<30} {cells[0]:>12} {cells[1]:>12}")
    lines.append('transposed: the image mirrored along its diagonal, "left of" and "above" swapped in the question')
    return "\n".join(lines)


def main(argv=None) -> None:
    run_probe(argv, "Relation questions about the scenes as drawn and transposed (left of <-> above): do the demo "
                    "model's errors follow the image?", probe, format_table, n_default=1000,
              n_help="held-out questions to take the relation ones from, as in eval (1000 hold 166)", n_min=FEWEST)


if __name__ == "__main__":
    main()
