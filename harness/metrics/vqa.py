"""VQA v2 accuracy with the answer normalisation of the official evaluation script (vqaEval.py)."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence

from mmengine.evaluator import BaseMetric

from harness.registry import METRICS

# The tables and the two processing functions below reproduce the official VQA evaluation script as it is today:
# GT-Vision-Lab/VQA, PythonEvaluationTools/vqaEvaluation/vqaEval.py at a013f0043c1e2cdc995922dfe257f7149aa9af06
# ("Fixed processing answers bug", 2021-03-11; the tables last changed in 458a8b2, 2016-10-08, which replaced the
# typographic apostrophes of the July-2015 beta's contractions by ASCII ones). tests/vqa_eval_official.py holds a
# verbatim copy of that script that tests/test_metrics.py checks this module against.
OFFICIAL_COMMIT = "a013f0043c1e2cdc995922dfe257f7149aa9af06"
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've",
    "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's",
    "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at",
    "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's",
    "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}  # fmt: skip
MANUAL_MAP = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES = ("a", "an", "the")
# The script is Python 2 and compiles these patterns without re.UNICODE, so "\d" is [0-9] there; re.ASCII keeps
# that under Python 3 (where "\d" would also match "١" or "３").
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)", re.ASCII)  # sic: "(?!<=\d)" is a look-ahead that always holds
COMMA_STRIP = re.compile(r"(\d)(\,)(\d)", re.ASCII)
# The script calls periodStrip.sub("", outText, re.UNICODE): the third positional argument of sub is the count,
# so at most re.UNICODE == 32 periods go.
PERIOD_STRIP_COUNT = 32
PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")


def _process_punctuation(text: str) -> str:
    """vqaEval.processPunctuation: a mark next to a space (or any mark of a text holding a 1,000-style number)
    is deleted, otherwise it becomes a space; then up to 32 periods not followed by a digit go."""
    out = text
    delete_all = COMMA_STRIP.search(text) is not None
    for p in PUNCT:
        if p + " " in text or " " + p in text or delete_all:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return PERIOD_STRIP.sub("", out, count=PERIOD_STRIP_COUNT)


def _process_digit_article(text: str) -> str:
    """vqaEval.processDigitArticle: lowercase, number words to digits, drop articles, restore contractions."""
    words = [MANUAL_MAP.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def _strip_whitespace(text: str) -> str:
    """What the script does to every answer first: newlines and tabs to spaces, then strip."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_answer(answer: str) -> str:
    """Canonical form of a VQA answer, as the official script compares answers when the humans disagree
    ("Two dogs." -> "2 dogs", "yes!" -> "yes", "t-shirt" -> "t shirt", "dont" -> "don't").

    The training side builds its answer vocabulary with it, so the classifier's labels and the evaluation
    agree on what counts as the same answer.
    """
    return _process_digit_article(_process_punctuation(_strip_whitespace(answer)))


def vqa_accuracy(pred_answer: str, answers: Sequence[str]) -> float:
    """Official VQA accuracy of one question in [0, 1]: the mean over the leave-one-out subsets of the human
    answers of min(#humans in the subset giving the prediction / 3, 1).

    Exactly as the official script (at :data:`OFFICIAL_COMMIT`): every answer has its newlines and tabs made
    spaces and is stripped; then, only when the humans gave more than one distinct (stripped) answer, both the
    human answers and the prediction go through :func:`normalize_answer`'s punctuation and digit/article
    processing. When all humans agree, the prediction must equal their answer as written: for ten times "yes",
    "Yes" and "yes." score 0 (a known property of the official evaluation, kept so the numbers are the
    published ones). Each of the ``answers`` is one human (the script leaves out one answer record at a time).
    """
    if not answers:
        raise ValueError("a VQA question without human answers cannot be scored")
    pred = _strip_whitespace(pred_answer)
    humans = [_strip_whitespace(a) for a in answers]
    if len(set(humans)) > 1:
        humans = [_process_digit_article(_process_punctuation(a)) for a in humans]
        pred = _process_digit_article(_process_punctuation(pred))
    matches = [h == pred for h in humans]
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
