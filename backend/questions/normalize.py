"""A question as words the parser can match: lower case, no accents, abbreviations expanded, typos corrected.

People type "qto deu a conta", "cosumo de ontem", "previsao", "tá caro?" and "kw/h". Accents go with
``unidecode`` (so "março" and "marco" are one word), chat abbreviations and spelled-out counts with the tables
of :mod:`backend.questions.lexicon`, and a word the parser does not know is replaced by the closest word it
does when one is close enough (``rapidfuzz``'s Damerau–Levenshtein similarity, which counts a swapped pair of
letters as one typo). Only words of five letters or more are corrected, and only towards a word with the same
first letter: short words and first letters are where a "typo" is most often another real word ("carro" is not
"caro").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Final

from rapidfuzz import process
from rapidfuzz.distance import DamerauLevenshtein
from unidecode import unidecode

from backend.questions.lexicon import ABBREVIATIONS, NUMBER_WORDS

_CODES: Final = {"SE": "sudeste", "S": "sul", "NE": "nordeste", "N": "norte", "SIN": "sin", "CO": "sudeste"}
_CODE_RE: Final = re.compile(r"(?<![\w/])(SE/CO|SE|S|NE|N|SIN)(?![\w])")
_REPLACEMENTS: Final = [
    (re.compile(r"r\s?\$"), " reais "),
    (re.compile(r"%"), " porcento "),
    (re.compile(r"\b(?:kilo|quilo|k)-?wa?t*s?\s*[/.\- ]?\s*h(?:ora|oras|s)?\b"), " kwh "),
    (re.compile(r"\b(?:kilo|quilo)-?wat+s?\b"), " kw "),
    (re.compile(r"\b(\d{1,2})\s?o\b"), r"\1"),  # 1º -> 1o -> 1
    (re.compile(r"\bprimeiro de\b"), "1 de"),
    (re.compile(r"(?<=[a-z])[-/](?=[a-z])"), " "),  # sexta-feira, sudeste/centro-oeste, casa-rio
    (re.compile(r"[^a-z0-9/\- ]+"), " "),
    (re.compile(r"(?<![0-9])[/\-]|[/\-](?![0-9])"), " "),  # keep / and - only inside dates
]
_UNIT_AFTER_COUNT: Final = re.compile(r"^(dias?|semanas?|mes|meses|anos?|horas?)$")


def fold(text: str) -> str:
    """Lower case without accents, punctuation turned into spaces (for names: sites, groups)."""
    return " ".join(re.sub(r"[^a-z0-9]+", " ", unidecode(text).lower()).split())


def tokens(question: str) -> list[str]:
    """The question as lower-case ASCII words; subsystem codes written in capitals ("SE", "NE") become names
    before lower-casing, where they would be confused with "se" and "ne"."""
    text = question if question.isupper() else _CODE_RE.sub(lambda m: f" {_CODES[m.group(1).split('/')[0]]} ",
                                                             question)
    text = unidecode(text).lower()
    for pattern, repl in _REPLACEMENTS:
        text = pattern.sub(repl, text)
    out: list[str] = []
    for word in text.split():
        out.extend(ABBREVIATIONS.get(word, word).split())
    for i, word in enumerate(out[:-1]):
        if word in NUMBER_WORDS and _UNIT_AFTER_COUNT.match(out[i + 1]):
            out[i] = str(NUMBER_WORDS[word])
    return out


class Speller:
    """Corrects words the parser does not know towards the ones it does (see the module docstring)."""

    def __init__(self, targets: Iterable[str], known: Iterable[str],
                 recognized: Callable[[str], bool] = lambda word: False) -> None:
        by_letter: dict[str, list[str]] = {}
        for word in sorted(set(targets)):
            if len(word) >= 5 and word.isalpha():
                by_letter.setdefault(word[0], []).append(word)
        self._by_letter = by_letter
        self._known = frozenset(known) | frozenset(targets)
        self._recognized = recognized

    def correct(self, words: list[str], extra_known: frozenset[str] = frozenset()) -> list[str]:
        return [self._word(w, extra_known) for w in words]

    def _word(self, word: str, extra_known: frozenset[str]) -> str:
        if (len(word) < 5 or not word.isalpha() or word in self._known or word in extra_known
                or (word.endswith("s") and word[:-1] in self._known) or self._recognized(word)):
            return word
        choices = self._by_letter.get(word[0])
        if not choices:
            return word
        cutoff = 0.74 if len(word) >= 8 else 0.79  # one typo in 5 letters, two in 8 (just under 0.8/0.75: floats)
        best = process.extractOne(word, choices, scorer=DamerauLevenshtein.normalized_similarity,
                                  score_cutoff=cutoff)
        return best[0] if best else word
