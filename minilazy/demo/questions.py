"""Questions about a scene, each with exactly one right answer, and the parser of descriptions.

Families (the keys of FAMILIES):
- color:    "What color is the circle?"              -> "red"   (the object named must be unique)
- shape:    "What shape is at the top left?"         -> "cross" (an occupied cell)
- count:    "How many red circles are there?"        -> "2"     (by colour, shape, both, or all)
- exist:    "Is there a blue square?"                -> "yes" / "no"
- relation: "Is the red circle left of the square?" -> "yes" / "no" (both objects unique; strictly left/above)
- describe: "Describe the image."                    -> "large red circle at top left and small ..."
  (every object as `size colour shape at cell`, row-major over the cells, joined by "and")

and one family that training may ask but the harness does not score (TRAINING_FAMILIES):
- where:    "What is the red circle at?"             -> "top left" (the object named must be unique;
  the words are the shipped tokenizer's); a relation question is two of these and a comparison
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from minilazy.demo.scenes import CELL_NAMES, COLORS, SHAPES, SIZES, Scene, SceneObject

FAMILIES = ("color", "shape", "count", "exist", "relation", "describe")
SHORT_FAMILIES = FAMILIES[:-1]  # one-word answers; "describe" is the long one
TRAINING_FAMILIES = SHORT_FAMILIES + ("where",)  # the short families training may ask
DESCRIBE_QUESTION = "Describe the image."
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "diamond": "diamonds", "cross": "crosses"}


@dataclass(frozen=True)
class QA:
    family: str
    question: str
    answer: str


def matches(obj: SceneObject, size: str | None, color: str | None, shape: str) -> bool:
    return obj.shape == shape and (size is None or obj.size == size) and (color is None or obj.color == color)


def unique_reference(scene: Scene, obj: SceneObject, with_color: bool = True) -> str | None:
    """The shortest phrase ("circle", "red circle", "small circle", "small red circle") naming only `obj`."""
    options = [(None, None), (None, obj.color), (obj.size, None), (obj.size, obj.color)]
    for size, color in options:
        if color is not None and not with_color:
            continue
        if sum(matches(o, size, color, obj.shape) for o in scene.objects) == 1:
            return " ".join(w for w in (size, color, obj.shape) if w)
    return None


def describe(scene: Scene) -> str:
    """Every object, row-major: "large red circle at top left and small blue cross at center"."""
    return " and ".join(f"{o.size} {o.color} {o.shape} at {o.cell}" for o in scene.objects)


def parse_description(text: str) -> set[tuple[str, str, str, str]]:
    """The (size, colour, shape, cell) tuples a description names; malformed parts are skipped."""
    cells = {name for row in CELL_NAMES for name in row}
    found = set()
    for part in text.strip().rstrip(".").split(" and "):
        words = part.split()
        if len(words) >= 5 and words[3] == "at":
            size, color, shape, cell = words[0], words[1], words[2], " ".join(words[4:])
            if size in SIZES and color in COLORS and shape in SHAPES and cell in cells:
                found.add((size, color, shape, cell))
    return found


def ask_color(scene: Scene, rng: random.Random) -> QA | None:
    candidates = [(o, ref) for o in scene.objects if (ref := unique_reference(scene, o, with_color=False))]
    if not candidates:
        return None
    obj, ref = rng.choice(candidates)
    return QA("color", f"What color is the {ref}?", obj.color)


def ask_shape(scene: Scene, rng: random.Random) -> QA:
    obj = rng.choice(scene.objects)
    return QA("shape", f"What shape is at the {obj.cell}?", obj.shape)


def ask_count(scene: Scene, rng: random.Random) -> QA:
    kind = rng.choice(("color", "shape", "both", "all"))
    # Half the time ask about attributes present in the scene, so that answers are not mostly "0".
    ref = rng.choice(scene.objects)
    color = ref.color if rng.random() < 0.5 else rng.choice(list(COLORS))
    shape = ref.shape if rng.random() < 0.5 else rng.choice(SHAPES)
    if kind == "color":
        question, n = f"How many {color} objects are there?", sum(o.color == color for o in scene.objects)
    elif kind == "shape":
        question, n = f"How many {PLURALS[shape]} are there?", sum(o.shape == shape for o in scene.objects)
    elif kind == "both":
        question = f"How many {color} {PLURALS[shape]} are there?"
        n = sum(o.color == color and o.shape == shape for o in scene.objects)
    else:
        question, n = "How many objects are there?", len(scene.objects)
    return QA("count", question, str(n))


def ask_exist(scene: Scene, rng: random.Random) -> QA:
    present = {(o.color, o.shape) for o in scene.objects}
    if rng.random() < 0.5:
        color, shape = rng.choice(sorted(present))
    else:
        absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
        color, shape = rng.choice(absent)
    answer = "yes" if (color, shape) in present else "no"
    return QA("exist", f"Is there a {color} {shape}?", answer)


def exist_subject(question: str) -> tuple[str, str]:
    """The (colour, shape) an exist question from `ask_exist` asks about."""
    color, shape = question.removeprefix("Is there a ").removesuffix("?").split()
    return color, shape


def named_objects(scene: Scene) -> list[tuple[SceneObject, str]]:
    """Every object a phrase can name alone, with its shortest such phrase."""
    return [(o, ref) for o in scene.objects if (ref := unique_reference(scene, o))]


def ask_relation(scene: Scene, rng: random.Random) -> QA | None:
    named = named_objects(scene)
    if len(named) < 2:
        return None
    (a, ref_a), (b, ref_b) = rng.sample(named, 2)
    if rng.random() < 0.5:
        return QA("relation", f"Is the {ref_a} left of the {ref_b}?", "yes" if a.col < b.col else "no")
    return QA("relation", f"Is the {ref_a} above the {ref_b}?", "yes" if a.row < b.row else "no")


RELATIONS = ("left of", "above")  # what `ask_relation` asks


def relation_subject(question: str) -> tuple[str, str, str]:
    """`(reference a, relation, reference b)` of a relation question from `ask_relation`."""
    body = question.removeprefix("Is the ").removesuffix("?")
    relation = next(r for r in RELATIONS if f" {r} the " in body)
    ref_a, ref_b = body.split(f" {relation} the ")
    return ref_a, relation, ref_b


def ask_where(scene: Scene, rng: random.Random) -> QA | None:
    named = named_objects(scene)
    if not named:
        return None
    obj, ref = rng.choice(named)
    return QA("where", f"What is the {ref} at?", obj.cell)


def ask_describe(scene: Scene, rng: random.Random) -> QA:
    return QA("describe", DESCRIBE_QUESTION, describe(scene))


ASKERS = {
    "color": ask_color, "shape": ask_shape, "count": ask_count,
    "exist": ask_exist, "relation": ask_relation, "describe": ask_describe, "where": ask_where,
}


def ask(scene: Scene, family: str, rng: random.Random) -> QA | None:
    """One question of `family` about `scene`, or None when the scene allows none (e.g. no unique object)."""
    if family not in ASKERS:
        raise ValueError(f"unknown question family {family!r}; expected one of {', '.join(ASKERS)}")
    return ASKERS[family](scene, rng)


def sample_questions(scene: Scene, rng: random.Random, count: int, families=SHORT_FAMILIES) -> list[QA]:
    """Up to `count` distinct questions of random `families` (duplicates and impossible ones are skipped)."""
    questions: dict[str, QA] = {}
    for _ in range(count * 3):
        if len(questions) == count:
            break
        qa = ask(scene, rng.choice(families), rng)
        if qa is not None and qa.question not in questions:
            questions[qa.question] = qa
    return list(questions.values())

