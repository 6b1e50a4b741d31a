"""Text about a scene: captions, VQA questions with ten human-style answers, NLVR2 statements and
referring expressions. Every text is true of the scene it describes (or deliberately false, for
NLVR2's False statements and VQA's "no" answers)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from harness.data.scenes import CATEGORIES, COLOURS, SceneObject

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def plural(category: str) -> str:
    return category + ("es" if category.endswith(("s", "x", "ch", "sh")) else "s")


def _pick(rng: np.random.Generator, seq: Sequence):
    return seq[int(rng.integers(len(seq)))]


def relation(a: SceneObject, b: SceneObject, image_size: int) -> str | None:
    """A spatial relation of ``a`` to ``b`` that holds with a clear margin, or None."""
    (ax, ay), (bx, by) = a.centre, b.centre
    margin = 0.12 * image_size
    dx, dy = bx - ax, by - ay
    if abs(dx) >= abs(dy):
        if dx > margin:
            return "to the left of"
        if dx < -margin:
            return "to the right of"
    else:
        if dy > margin:
            return "above"
        if dy < -margin:
            return "below"
    return None


def region(obj: SceneObject, image_size: int) -> str:
    """Where an object is, as a phrase: "in the top left corner", "at the bottom", "in the middle"."""
    cx, cy = obj.centre
    third = image_size / 3
    col = ("left", "", "right")[min(2, int(cx // third))]
    row = ("top", "", "bottom")[min(2, int(cy // third))]
    if row and col:
        return f"in the {row} {col} corner"
    if row:
        return f"at the {row}"
    if col:
        return f"on the {col}"
    return "in the middle"


def _noun_phrase(rng: np.random.Generator, category: str, objects: list[SceneObject]) -> str:
    same = [o for o in objects if o.category == category]
    if len(same) == 1:
        o = same[0]
        size = f"{o.size_word} " if rng.random() < 0.4 else ""
        article = "an" if (size or o.colour)[0] in "aeiou" else "a"
        return f"{article} {size}{o.colour} {category}"
    colours = sorted({o.colour for o in same})
    if len(colours) == 1:
        return f"{NUMBER_WORDS[len(same)]} {colours[0]} {plural(category)}"
    if len(same) == 2 and rng.random() < 0.5:
        return " and ".join(f"{'an' if c[0] in 'aeiou' else 'a'} {c} {category}" for c in colours)
    return f"{NUMBER_WORDS[len(same)]} {plural(category)}"


def caption(rng: np.random.Generator, objects: list[SceneObject], image_size: int) -> tuple[str, list[str]]:
    """One caption mentioning one to three of the scene's categories; returns it and those categories."""
    present = sorted({o.category for o in objects}, key=CATEGORIES.index)
    k = min(len(present), int(rng.choice([1, 2, 3], p=[0.45, 0.4, 0.15])))
    mentioned = [present[i] for i in rng.permutation(len(present))[:k]]
    phrases = [_noun_phrase(rng, c, objects) for c in mentioned]
    singles = {c: next(o for o in objects if o.category == c) for c in mentioned
               if sum(o.category == c for o in objects) == 1}
    if k == 1:
        if mentioned[0] in singles and rng.random() < 0.6:
            text = f"{phrases[0]} {region(singles[mentioned[0]], image_size)} of the picture"
        else:
            text = _pick(rng, ("{} on a textured background", "a picture of {}", "an image showing {}",
                               "{} among other shapes")).format(phrases[0])
    else:
        rel = None
        if mentioned[0] in singles and mentioned[1] in singles:
            rel = relation(singles[mentioned[0]], singles[mentioned[1]], image_size)
        text = f"{phrases[0]} {rel} {phrases[1]}" if rel else f"{phrases[0]} and {phrases[1]}"
        if k == 3:
            text += _pick(rng, (", with {} nearby", " and {}", ", plus {}")).format(phrases[2])
    return text, mentioned


def _answers(rng: np.random.Generator, answer: str, alternatives: Sequence[str]) -> list[str]:
    """Ten answers in the way VQA annotators give them: mostly the truth, sometimes written
    differently ("Yes", "2" as "two", trailing punctuation), sometimes a different answer."""
    answers = [answer] * 10
    n_other = int(rng.choice([0, 0, 0, 1, 2, 3]))
    for i in rng.permutation(10)[:n_other]:
        answers[i] = _pick(rng, alternatives)
    for i in range(10):
        r = rng.random()
        if r < 0.08:
            answers[i] = answers[i].capitalize()
        elif r < 0.12:
            answers[i] = answers[i] + "."
        elif r < 0.16 and answers[i].isdigit():
            answers[i] = NUMBER_WORDS[int(answers[i])] if int(answers[i]) < len(NUMBER_WORDS) else answers[i]
        elif r < 0.2 and answers[i] in CATEGORIES:
            answers[i] = "a " + answers[i]
    return answers


def vqa_question(rng: np.random.Generator, objects: list[SceneObject], image_size: int) -> dict:
    """One question of a random type; ``answer`` is the truth, ``answers`` the ten annotators'."""
    cats = Counter(o.category for o in objects)
    cols = Counter(o.colour for o in objects)
    pairs = Counter((o.colour, o.category) for o in objects)
    kinds = ["count", "exist"]
    if any(n == 1 for n in cats.values()):
        kinds.append("colour")
    if any(n == 1 for n in cols.values()):
        kinds.append("shape")
    unique = [o for o in objects if pairs[(o.colour, o.category)] == 1]
    rel_pairs = [(a, b, r) for a in unique for b in unique if a is not b
                 if (r := relation(a, b, image_size)) is not None]
    if rel_pairs:
        kinds.append("relation")
    kind = _pick(rng, kinds)
    if kind == "count":
        # the count first, then a shape with that count: drawing the shape first would make "0" the
        # answer to half the questions, learnable from the words alone
        by_count = Counter(cats.get(c, 0) for c in CATEGORIES)
        n = _pick(rng, sorted(by_count))
        category = _pick(rng, [c for c in CATEGORIES if cats.get(c, 0) == n])
        answer = str(n)
        q, qtype, atype = f"how many {plural(category)} are there?", "how many", "number"
        alternatives = [str(max(0, n - 1)), str(n + 1)]
    elif kind == "exist":
        if rng.random() < 0.5:
            colour, category = _pick(rng, sorted(pairs))
        else:
            absent = [(c, s) for c in COLOURS for s in CATEGORIES if (c, s) not in pairs]
            colour, category = _pick(rng, absent)
        answer = "yes" if (colour, category) in pairs else "no"
        q, qtype, atype = f"is there a {colour} {category}?", "is there a", "yes/no"
        alternatives = ["no" if answer == "yes" else "yes"]
    elif kind == "colour":
        category = _pick(rng, sorted(c for c, n in cats.items() if n == 1))
        answer = next(o.colour for o in objects if o.category == category)
        q, qtype, atype = f"what color is the {category}?", "what color is the", "other"
        alternatives = [c for c in COLOURS if c != answer]
    elif kind == "shape":
        colour = _pick(rng, sorted(c for c, n in cols.items() if n == 1))
        answer = next(o.category for o in objects if o.colour == colour)
        q, qtype, atype = f"what shape is the {colour} object?", "what shape is the", "other"
        alternatives = [c for c in CATEGORIES if c != answer]
    else:
        a, b, rel = rel_pairs[int(rng.integers(len(rel_pairs)))]
        asked = rel
        if rng.random() < 0.5:
            asked = _pick(rng, [r for r in ("to the left of", "to the right of", "above", "below") if r != rel])
        answer = "yes" if asked == rel else "no"
        q = f"is the {a.colour} {a.category} {asked} the {b.colour} {b.category}?"
        qtype, atype = "is the", "yes/no"
        alternatives = ["no" if answer == "yes" else "yes"]
    return {"question": q, "answer": answer, "answers": _answers(rng, answer, alternatives),
            "question_type": qtype, "answer_type": atype}


def _nlvr2_truth(kind: str, args: tuple, left: list[SceneObject], right: list[SceneObject]) -> bool:
    def count(objs, category=None, colour=None):
        return sum((category is None or o.category == category) and (colour is None or o.colour == colour)
                   for o in objs)

    if kind == "exactly":
        side, n, category = args
        return count(left if side == "left" else right, category) == n
    if kind == "both":
        colour, category = args
        return count(left, category, colour) > 0 and count(right, category, colour) > 0
    if kind == "more":
        (category,) = args
        return count(left, category) > count(right, category)
    if kind == "none":
        side, colour = args
        return count(left if side == "left" else right, colour=colour) == 0
    raise ValueError(kind)


def _nlvr2_statements(left: list[SceneObject], right: list[SceneObject]) -> dict[tuple, list[tuple[str, bool]]]:
    """Every statement the templates make about the objects of a pair, with its truth value, grouped by
    what the text alone shows (the template and the number it states)."""
    objects = left + right
    categories = sorted({o.category for o in objects})
    groups: dict[tuple, list[tuple[str, bool]]] = {}

    def add(key: tuple, kind: str, args: tuple, text: str) -> None:
        groups.setdefault(key, []).append((text, _nlvr2_truth(kind, args, left, right)))

    for side in ("left", "right"):
        for category in categories:
            for n in range(4):
                noun = category if n == 1 else plural(category)
                add(("exactly", n), "exactly", (side, n, category),
                    f"the {side} image contains exactly {NUMBER_WORDS[n]} {noun}")
        for colour in sorted({o.colour for o in objects}):
            add(("none",), "none", (side, colour), f"the {side} image has no {colour} objects")
    for colour, category in sorted({(o.colour, o.category) for o in objects}):
        add(("both",), "both", (colour, category), f"both images contain a {colour} {category}")
    for category in categories:
        add(("more",), "more", (category,),
            f"there are more {plural(category)} in the left image than in the right image")
    return groups


def nlvr2_statement(
    rng: np.random.Generator, left: list[SceneObject], right: list[SceneObject], want: bool
) -> tuple[str, bool]:
    """A statement about two scenes with the truth value ``want``.

    The template (and stated number) is drawn from those that have both a true and a false statement
    for this pair, and only then the statement of the wanted value, so that with ``want`` alternating the
    text alone says nothing about the label: every template is True half the time. Statements only name
    colours and shapes that occur in the pair, so a False one cannot be told from the words either."""
    groups = _nlvr2_statements(left, right)
    keys = [key for key in sorted(groups) if len({label for _, label in groups[key]}) == 2]
    if not keys:  # two scenes alike in every count and colour: no template can be both, take any statement
        keys = sorted(groups)
    candidates = groups[keys[int(rng.integers(len(keys)))]]
    wanted = [c for c in candidates if c[1] == want] or candidates
    return wanted[int(rng.integers(len(wanted)))]


def referring_expressions(
    rng: np.random.Generator, objects: list[SceneObject], image_size: int
) -> list[tuple[int, list[str]]]:
    """Objects that some expression picks out uniquely, with one to three such expressions each."""
    cats = Counter(o.category for o in objects)
    cols = Counter(o.colour for o in objects)
    pairs = Counter((o.colour, o.category) for o in objects)
    refs = []
    for i, o in enumerate(objects):
        sents = []
        if pairs[(o.colour, o.category)] == 1:
            sents.append(f"the {o.colour} {o.category}")
        if cats[o.category] == 1:
            sents.append(f"the {o.category} {region(o, image_size)}")
        if cols[o.colour] == 1:
            sents.append(f"the {o.colour} object")
        same = [p for p in objects if p.category == o.category]
        if len(same) >= 2:
            xs = sorted(p.centre[0] for p in same)
            if o.centre[0] == xs[0] and xs[1] - xs[0] > 0.1 * image_size:
                sents.append(f"the leftmost {o.category}")
            if o.centre[0] == xs[-1] and xs[-1] - xs[-2] > 0.1 * image_size:
                sents.append(f"the rightmost {o.category}")
        if sents:
            order = rng.permutation(len(sents))[: int(rng.integers(1, min(3, len(sents)) + 1))]
            refs.append((i, [sents[j] for j in order]))
    return refs
