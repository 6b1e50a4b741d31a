"""VQA v2 accuracy with the answer normalisation of the official evaluation script (vqaEval.py)."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence

from mmengine.evaluator import BaseMetric

from harness.registry import METRICS

# The tables below are copied verbatim from the official VQA evaluation script
# (GT-Vision-Lab/VQA, PythonEvaluationTools/vqaEvaluation/vqaEval.py), typographic apostrophes included.
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn’t’ve", "couldnt’ve": "couldn’t’ve", "didnt": "didn’t", "doesnt": "doesn’t",
    "dont": "don’t", "hadnt": "hadn’t", "hadnt’ve": "hadn’t’ve", "hadn'tve": "hadn’t’ve", "hasnt": "hasn’t",
    "havent": "haven’t", "hed": "he’d", "hed’ve": "he’d’ve", "he’dve": "he’d’ve", "hes": "he’s",
    "howd": "how’d", "howll": "how’ll", "hows": "how’s", "Id’ve": "I’d’ve", "I’dve": "I’d’ve", "Im": "I’m",
    "Ive": "I’ve", "isnt": "isn’t", "itd": "it’d", "itd’ve": "it’d’ve", "it’dve": "it’d’ve", "itll": "it’ll",
    "let’s": "let’s", "maam": "ma’am", "mightnt": "mightn’t", "mightnt’ve": "mightn’t’ve",
    "mightn’tve": "mightn’t’ve", "mightve": "might’ve", "mustnt": "mustn’t", "mustve": "must’ve",
    "neednt": "needn’t", "notve": "not’ve", "oclock": "o’clock", "oughtnt": "oughtn’t",
    "ow’s’at": "’ow’s’at", "’ows’at": "’ow’s’at", "’ow’sat": "’ow’s’at", "shant": "shan’t",
    "shed’ve": "she’d’ve", "she’dve": "she’d’ve", "she’s": "she’s", "shouldve": "should’ve",
    "shouldnt": "shouldn’t", "shouldnt’ve": "shouldn’t’ve", "shouldn’tve": "shouldn’t’ve",
    "somebody’d": "somebodyd", "somebodyd’ve": "somebody’d’ve", "somebody’dve": "somebody’d’ve",
    "somebodyll": "somebody’ll", "somebodys": "somebody’s", "someoned": "someone’d",
    "someoned’ve": "someone’d’ve", "someone’dve": "someone’d’ve", "someonell": "someone’ll",
    "someones": "someone’s", "somethingd": "something’d", "somethingd’ve": "something’d’ve",
    "something’dve": "something’d’ve", "somethingll": "something’ll", "thats": "that’s", "thered": "there’d",
    "thered’ve": "there’d’ve", "there’dve": "there’d’ve", "therere": "there’re", "theres": "there’s",
    "theyd": "they’d", "theyd’ve": "they’d’ve", "they’dve": "they’d’ve", "theyll": "they’ll",
    "theyre": "they’re", "theyve": "they’ve", "twas": "’twas", "wasnt": "wasn’t", "wed’ve": "we’d’ve",
    "we’dve": "we’d’ve", "weve": "we've", "werent": "weren’t", "whatll": "what’ll", "whatre": "what’re",
    "whats": "what’s", "whatve": "what’ve", "whens": "when’s", "whered": "where’d", "wheres": "where's",
    "whereve": "where’ve", "whod": "who’d", "whod’ve": "who’d’ve", "who’dve": "who’d’ve", "wholl": "who’ll",
    "whos": "who’s", "whove": "who've", "whyll": "why’ll", "whyre": "why’re", "whys": "why’s", "wont": "won’t",
    "wouldve": "would’ve", "wouldnt": "wouldn’t", "wouldnt’ve": "wouldn’t’ve", "wouldn’tve": "wouldn’t’ve",
    "yall": "y’all", "yall’ll": "y’all’ll", "y’allll": "y’all’ll", "yall’d’ve": "y’all’d’ve",
    "y’alld’ve": "y’all’d’ve", "y’all’dve": "y’all’d’ve", "youd": "you’d", "youd’ve": "you’d’ve",
    "you’dve": "you’d’ve", "youll": "you’ll", "youre": "you’re", "youve": "you’ve",
}  # fmt: skip
MANUAL_MAP = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES = ("a", "an", "the")
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")  # sic: "(?!<=\d)" is a look-ahead that always holds here
COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
PUNCT = (";", ":", "/", "'", "[", "]", '"', "(", ")", "=", "+", "\\", "_", ">", "<", "@", "`", ",", "?")


def _process_punctuation(text: str) -> str:
    """vqaEval.processPunctuation: a mark next to a space (or any text with a 1,000-style number) is deleted,
    otherwise it becomes a space; then periods not followed by a digit go."""
    out = text
    delete = COMMA_STRIP.search(text) is not None
    for p in PUNCT:
        if delete or p + " " in text or " " + p in text:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return PERIOD_STRIP.sub("", out)


def _process_digit_article(text: str) -> str:
    """vqaEval.processDigitArticle: lowercase, number words to digits, drop articles, restore contractions."""
    words = [MANUAL_MAP.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def normalize_answer(answer: str) -> str:
    """Canonical form of a VQA answer, as the official script compares them ("Two dogs." -> "2 dogs").

    The training side builds its answer vocabulary with it, so the classifier's labels and the evaluation
    agree on what counts as the same answer.
    """
    text = answer.replace("\n", " ").replace("\t", " ").strip()
    return _process_digit_article(_process_punctuation(text))


def vqa_accuracy(pred_answer: str, answers: Sequence[str]) -> float:
    """Official VQA accuracy of one question in [0, 1]: the mean over the leave-one-out subsets of the human
    answers of min(#humans in the subset giving the prediction / 3, 1).

    Both sides go through :func:`normalize_answer`. The official script only strips punctuation from the
    human answers, and only when they disagree, because its annotation file holds answers already in
    canonical form (where normalising again changes nothing); here raw answers ("Two.", "the dog") get the
    same treatment as the prediction.
    """
    if not answers:
        raise ValueError("a VQA question without human answers cannot be scored")
    pred = normalize_answer(pred_answer)
    matches = [normalize_answer(a) == pred for a in answers]
    total = sum(matches)
    return sum(min(1.0, (total - m) / 3.0) for m in matches) / len(matches)


@METRICS.register_module()
class VQAMetric(BaseMetric):
    """VQA v2 accuracy in percent: ``vqa_acc`` over all questions and ``vqa_acc_<answer_type>`` per answer
    type (``vqa_acc_yes/no``, ``vqa_acc_number``, ``vqa_acc_other``) when rows carry ``answer_type``.

    Row per question: ``question_id``, ``pred_answer``, ``answers`` (the ten human answers), optional
    ``answer_type``. A question seen twice counts once. An empty prediction is scored like any other answer
    (it matches nobody unless a human gave an empty answer).
    """

    default_prefix = None

    def process(self, data_batch: dict | None, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            row = {
                "question_id": int(sample["question_id"]),
                "pred_answer": str(sample["pred_answer"]),
                "answers": [str(a) for a in sample["answers"]],
            }
            if sample.get("answer_type") is not None:
                row["answer_type"] = str(sample["answer_type"])
            self.results.append(row)

    def compute_metrics(self, results: list[dict]) -> dict[str, float]:
        unique: dict[int, dict] = {}
        for row in results:
            unique.setdefault(row["question_id"], row)
        overall: list[float] = []
        by_type: dict[str, list[float]] = defaultdict(list)
        for row in unique.values():
            acc = vqa_accuracy(row["pred_answer"], row["answers"])
            overall.append(acc)
            if "answer_type" in row:
                by_type[row["answer_type"]].append(acc)
        metrics = {"vqa_acc": 100.0 * sum(overall) / len(overall) if overall else float("nan")}
        for answer_type, accs in sorted(by_type.items()):
            metrics[f"vqa_acc_{answer_type}"] = 100.0 * sum(accs) / len(accs)
        return metrics
