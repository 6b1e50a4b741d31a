"""Metrics against independent computations."""

import itertools
import re

import numpy as np
import pytest

from harness.metrics import roc_auc


def pairwise_auc(scores, labels):
    """AUC by its definition: P(score of a positive > score of a negative), ties counting half."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auc_hand_computed_cases():
    assert roc_auc([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == 1.0
    assert roc_auc([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0]) == 0.0
    assert roc_auc([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0]) == 0.5
    # positives 0.8 and 0.4; negatives 0.6 and 0.4: wins 1 + 1 + 0 + 0.5 = 2.5 of 4
    assert roc_auc([0.8, 0.4, 0.6, 0.4], [1, 1, 0, 0]) == pytest.approx(0.625)
    assert np.isnan(roc_auc([0.3, 0.4], [1, 1]))


def test_auc_matches_the_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.integers(0, 6, size=40).astype(float)  # many ties
        labels = rng.random(40) < 0.3
        if labels.any() and (~labels).any():
            assert roc_auc(scores, labels) == pytest.approx(pairwise_auc(scores, labels))


def test_pretrain_metric_against_hand_computed_values():
    import torch

    from harness.metrics import PretrainMetric

    metric = PretrainMetric()
    batch = {"image_ids": torch.tensor([1, 1, 2, 3])}
    e = torch.eye(3)
    outputs = [
        # captions 0 and 1 describe image 1, caption 2 image 2, caption 3 image 3
        dict(itm_score=torch.tensor(0.9), itm_neg_score=torch.tensor(0.2), image_embed=e[0], text_embed=e[0],
             patch_scores=torch.tensor([0.9, 0.1]), patch_labels=torch.tensor([1.0, 0.0])),
        dict(itm_score=torch.tensor(0.4), image_embed=e[0], text_embed=e[1],
             patch_scores=torch.tensor([0.2, 0.8]), patch_labels=torch.tensor([1.0, 0.0])),
        dict(itm_score=torch.tensor(0.7), itm_neg_score=torch.tensor(0.6), image_embed=e[1], text_embed=e[1],
             patch_scores=torch.tensor([0.5, 0.5]), patch_labels=torch.tensor([0.0, 1.0])),
        dict(itm_score=torch.tensor(0.8), itm_neg_score=torch.tensor(0.1), image_embed=e[2], text_embed=e[2],
             patch_scores=torch.tensor([0.3, 0.7]), patch_labels=torch.tensor([0.0, 1.0])),
    ]
    metric.process(batch, outputs)
    result = metric.compute_metrics(metric.results)
    # true pairs above 0.5: 3 of 4; mismatched below 0.5: 2 of 3
    assert result["itm_acc"] == pytest.approx(0.5 * (3 / 4 + 2 / 3))
    # caption 1 (text e1) is nearest to image 2, not its own image 1; the others are right
    assert result["itc_r1"] == pytest.approx(3 / 4)
    scores = [0.9, 0.1, 0.2, 0.8, 0.5, 0.5, 0.3, 0.7]
    labels = [1, 0, 1, 0, 0, 1, 0, 1]
    assert result["patch_auc"] == pytest.approx(pairwise_auc(scores, labels))


# ------------------------------------------------------------------------------ VQA against the official script


def _official_module():
    """tests/vqa_eval_official.py: the official vqaEval.py, copied verbatim (its header says from where)."""
    import importlib.util
    import warnings
    from pathlib import Path

    path = Path(__file__).with_name("vqa_eval_official.py")
    spec = importlib.util.spec_from_file_location("vqa_eval_official", path)
    module = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():  # its "\d" in plain strings: DeprecationWarning / SyntaxWarning on compiling
        warnings.simplefilter("ignore")
        spec.loader.exec_module(module)
    return module


class _QA:
    """The two attributes of the VQA API objects (annotations, results) that VQAEval reads."""

    def __init__(self, qa: dict) -> None:
        self.qa = qa

    def getQuesIds(self) -> list[int]:  # noqa: N802 - the VQA API's name
        return list(self.qa)


def official_vqa(cases: list[tuple[str, list[str]]]) -> tuple[list[float], float]:
    """Per-question accuracies in [0, 1] (unrounded) and the overall percentage (rounded to 2 digits, as the
    script prints it) of the official VQAEval.evaluate over (prediction, human answers) pairs."""
    module = _official_module()

    class Unrounded(module.VQAEval):
        def setEvalQA(self, quesId, acc):  # noqa: N802, N803 - overriding the script's method
            self.evalQA[quesId] = acc

        def updateProgress(self, progress):  # noqa: N802 - the progress bar would print to stdout
            pass

    gts = {i: {"question_type": "what", "answer_type": "other",
               "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1} for j, a in enumerate(humans)]}
           for i, (_, humans) in enumerate(cases)}
    res = {i: {"question_id": i, "answer": pred} for i, (pred, _) in enumerate(cases)}
    evaluator = Unrounded(_QA(gts), _QA(res), n=2)
    evaluator.evaluate()
    return [evaluator.evalQA[i] for i in range(len(cases))], evaluator.accuracy["overall"]


def official_normalize(answer: str) -> str:
    """processPunctuation then processDigitArticle of the official script, after its whitespace handling."""
    evaluator = _official_module().VQAEval(_QA({}), _QA({}))
    text = answer.replace("\n", " ").replace("\t", " ").strip()
    return evaluator.processDigitArticle(evaluator.processPunctuation(text))


def test_vqa_tables_are_the_official_ones():
    from harness.metrics import vqa

    official = _official_module().VQAEval(_QA({}), _QA({}))
    assert vqa.CONTRACTIONS == official.contractions
    assert vqa.MANUAL_MAP == official.manualMap
    assert list(vqa.ARTICLES) == official.articles
    assert list(vqa.PUNCT) == official.punct
    assert vqa.PERIOD_STRIP.pattern == official.periodStrip.pattern
    assert vqa.COMMA_STRIP.pattern == official.commaStrip.pattern
    assert vqa.PERIOD_STRIP_COUNT == int(re.UNICODE)  # what the script passes as sub's count
    # the July-2015 beta tables this module used to have: typographic apostrophes, ":" and "'" as punctuation,
    # no "-", "!", "{", "}"
    assert not any("\u2019" in k or "\u2019" in v for k, v in vqa.CONTRACTIONS.items())
    assert ":" not in vqa.PUNCT and "'" not in vqa.PUNCT and {"-", "!", "{", "}"} <= set(vqa.PUNCT)


VQA_HARD_STRINGS = [
    # the four a review found scored against the July-2015 beta tables
    "yes!", "t-shirt", "dont", "1:00",
    # contractions (keys with and without apostrophes; capitalised keys never match after lowercasing)
    "isnt", "whats", "cant", "Im", "Ive", "youre", "wouldnt've", "y'allll", "somebody'd", "let's", "don't",
    "oclock", "'twas", "twas",
    # number words
    "two", "Two", "TWO", "none", "zero", "ten", "eleven", "one hundred", "two dogs", "twenty two",
    # articles
    "the dog", "a red car", "An apple", "the", "a", "theater", "an a the", "The Two Towers",
    # punctuation inside and around numbers, trailing periods
    "1,000", "1,000 dogs!", "3.5", "3.5.", ".5", "5.", "1.000,5", "10:30", "no. 5", "yes.", "yes...", "e.g.",
    "u.s.a.", "...", ".", ",", "5,", ",5", "1, 2", "1,2,3", "$1,000.00", "50%", "2/3", "1-2", "3 - 4",
    "40 periods" + "." * 40, "a." * 20,
    # other punctuation: next to a space it goes, otherwise it is a space
    "hello,world", "left, right", "yes (probably)", "(yes)", "black/white", "black / white", "a;b", "a ;b",
    "[red]", "{red}", "\"yes\"", "x=y", "a+b", "back\\slash", "snake_case", "a>b<c", "me@home", "`tick`",
    "what?", "what ?", "wow!!", "t - shirt", "hot-dog stand", "one-way", "yes!no", "it's", "o'clock",
    # whitespace
    "  tennis\n", "\ttennis", "ten\nnis", "ten\tnis", "  ", "", "a  b",
    # non-ASCII the script leaves alone
    "café", "don\u2019t", "naïve", "ＹＥＳ",
]


@pytest.mark.parametrize("raw", VQA_HARD_STRINGS)
def test_vqa_normalisation_equals_the_official_script(raw):
    from harness.metrics import normalize_answer

    assert normalize_answer(raw) == official_normalize(raw)


@pytest.mark.parametrize("raw, canonical", [
    ("yes!", "yes"), ("t-shirt", "t shirt"), ("dont", "don't"), ("1:00", "1:00"), ("1,000", "1000"),
    ("3.5", "3.5"), ("yes.", "yes"), ("Two", "2"), ("the dog", "dog"), ("hello,world", "hello world"),
    ("left, right", "left right"), ("it's", "it's"), ("." * 40, "." * 8),
])
def test_vqa_normalisation_by_hand(raw, canonical):
    from harness.metrics import normalize_answer

    assert normalize_answer(raw) == canonical


# (prediction, humans, accuracy): hand-computed with the leave-one-out formula
VQA_HARD_QUESTIONS = [
    # three of ten humans agree with the prediction: 3 subsets of 9 hold 2 of them, 7 hold all 3 -> 0.9;
    # the July-2015 tables scored the first three 0 and "1:00" against "1 00" 1.0
    ("yes!", ["yes"] * 3 + ["no"] * 7, 0.9),
    ("t-shirt", ["t shirt"] * 3 + ["shirt"] * 7, 0.9),
    ("dont", ["don't"] * 3 + ["do"] * 7, 0.9),
    ("1:00", ["1 00"] * 9 + ["noon"], 0.0),
    # one distinct human answer: nothing is normalised, on either side
    ("yes", ["yes"] * 10, 1.0),
    ("Yes", ["yes"] * 10, 0.0),
    ("yes!", ["yes"] * 10, 0.0),
    ("Two.", ["2"] * 10, 0.0),
    ("yes", ["yes."] * 10, 0.0),
    (" yes\n", ["yes"] * 10, 1.0),  # whitespace is always handled
    ("2", ["2"] * 9 + ["2\t"], 1.0),  # one distinct answer once stripped
    # several distinct human answers: both sides normalised
    ("Two.", ["2"] * 4 + ["3"] * 6, 1.0),
    ("yes", ["yes."] * 9 + ["yes"], 1.0),
    ("the dog", ["dog"] * 2 + ["cat"] * 8, 0.6),
    ("1,000", ["1000"] * 2 + ["1,000"] + ["many"] * 7, 0.9),
    ("3.5", ["3.5"] * 1 + ["3"] * 9, 0.3),
    ("", ["cat"] * 10, 0.0),
    ("", ["", "", "", "cat"], 0.75),
    ("red", ["red", "blue", "red"], 4 / 9),  # (1/3 + 2/3 + 1/3) / 3
]


def test_vqa_accuracy_equals_the_official_script_on_hard_cases():
    from harness.metrics import vqa_accuracy

    official, _ = official_vqa([(pred, humans) for pred, humans, _ in VQA_HARD_QUESTIONS])
    for (pred, humans, expected), theirs in zip(VQA_HARD_QUESTIONS, official, strict=True):
        ours = vqa_accuracy(pred, humans)
        assert ours == theirs, (pred, humans)
        assert ours == pytest.approx(expected), (pred, humans)


# pieces the fuzz builds answers from: words the tables act on, numbers with separators, and punctuation
_WORDS = ["yes", "Yes", "no", "two", "Two", "none", "ten", "the", "a", "An", "dog", "dont", "isnt", "Im", "whats",
          "t-shirt", "1:00", "1,000", "3.5", "5", "10", "red", "it's", "y'all", "shirt", "1", "0"]
_MARKS = [".", "..", "!", "?", ",", "-", ":", "'", "(", ")", '"', ";", "/", "\\", "_", "{", "}", "[", "]", "@",
          "`", "<", ">", "=", "+", "%", "$", "\u2019"]
_SPACES = [" ", " ", " ", "", "  ", "\t", "\n"]


def _fuzz_answer(rng: np.random.Generator) -> str:
    parts = []
    for _ in range(int(rng.integers(1, 5))):
        piece = _WORDS[rng.integers(len(_WORDS))] if rng.random() < 0.7 else _MARKS[rng.integers(len(_MARKS))]
        parts.append(piece)
        parts.append(_SPACES[rng.integers(len(_SPACES))])
    if rng.random() < 0.3:
        parts.insert(0, _SPACES[rng.integers(len(_SPACES))])
    return "".join(parts)


def test_vqa_fuzz_against_the_official_script():
    from harness.metrics import VQAMetric, normalize_answer, vqa_accuracy

    rng = np.random.default_rng(0)
    strings = [_fuzz_answer(rng) for _ in range(600)]
    mismatched = [s for s in strings if normalize_answer(s) != official_normalize(s)]
    assert not mismatched

    cases = []
    for _ in range(400):
        pool = [_fuzz_answer(rng) for _ in range(int(rng.integers(1, 4)))]
        # variants of one answer that normalise alike ("Two." / "2") make agreement likely
        pool += [p.upper() if rng.random() < 0.5 else p + "." for p in pool[:1]]
        n = int(rng.choice([10, 10, 10, 3, 1]))
        humans = [pool[rng.integers(len(pool))] for _ in range(n)] if rng.random() < 0.8 else [pool[0]] * n
        pred = pool[rng.integers(len(pool))] if rng.random() < 0.7 else _fuzz_answer(rng)
        cases.append((pred, humans))
    official, overall = official_vqa(cases)
    ours = [vqa_accuracy(pred, humans) for pred, humans in cases]
    assert ours == official
    assert len({round(a, 6) for a in ours}) >= 4 and sum(a == 1.0 for a in ours) >= 20  # the fuzz is not trivial
    metric = VQAMetric()
    metric.process(None, [dict(question_id=i, pred_answer=p, answers=h) for i, (p, h) in enumerate(cases)])
    assert round(metric.compute_metrics(metric.results)["vqa_acc"], 2) == overall


def test_vqa_digits_are_ascii_as_in_the_python2_script():
    """The script compiles "\\d" without re.UNICODE under Python 2: other digits are no digits (a comma
    between them is not a 1,000-style number, a period before one still goes)."""
    from harness.metrics import normalize_answer

    assert normalize_answer("\u0661,\u0662") == "\u0661 \u0662"  # Arabic-Indic 1,2: the comma becomes a space
    assert normalize_answer("1,2") == "12"
    assert normalize_answer("x.\uff15") == "x\uff15"  # fullwidth 5 after the period: the period goes
