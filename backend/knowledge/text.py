"""Portuguese text as search terms: words, accents, stop words, stems, typos (no I/O).

Both sides of the search go through the same function, so they always agree: the articles and docs when the
index is built, and the user's question when it is searched.

``"Por que a bandeira está VERMELHA?"`` -> words ``por que a bandeira esta vermelha`` (lower case, accents
removed by ``unidecode``, so "tensão" and "tensao" are one word) -> without stop words ``bandeira vermelha`` ->
Snowball's Portuguese stems ``bandeir vermelh`` (so "bandeiras", "bandeira" and "bandeirada" meet).

Accents are removed *before* stemming: the stemmer keeps accented suffixes ("tarifária" -> "tarifár") but
strips the bare ones ("tarifaria" -> "tarif"), and people type both.

Typos: a query word that no article contains is replaced by the closest word of the articles (``difflib``'s
ratio ≥ 0.8 among the words whose length is within two), so "bandera" finds "bandeira" and "disponibilidadi" finds
"disponibilidade"; a word with nothing close enough (a term the knowledge base does not know) is dropped rather
than guessed.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Final

import snowballstemmer
from unidecode import unidecode

_WORD_RE: Final = re.compile(r"[a-z0-9]+")
MIN_FUZZY_LEN: Final = 4
"""Words shorter than this are never corrected (too many near neighbours: "te", "kw", "cmo")."""
FUZZY_CUTOFF: Final = 0.8

STOP_WORDS: Final = frozenset({
    "a", "o", "as", "os", "um", "uma", "uns", "umas", "ao", "aos", "de", "da", "do", "das", "dos", "d", "em", "no",
    "na", "nos", "nas", "num", "numa", "por", "pelo", "pela", "pelos", "pelas", "para", "pra", "pro", "pros",
    "pras", "com", "sem", "sob", "sobre", "entre", "ate", "apos", "e", "ou", "nem", "mas", "se", "que", "qual",
    "quais", "quanto", "quanta", "quantos", "quantas", "quando", "como", "onde", "porque", "pq", "porq", "ja",
    "nao", "sim", "mais", "menos", "muito", "muita", "muitos", "muitas", "pouco", "tao", "tambem", "so", "eu", "tu",
    "ele", "ela", "vos", "eles", "elas", "me", "mim", "meu", "minha", "meus", "minhas", "seu", "sua", "seus",
    "suas", "dele", "dela", "lhe", "lhes", "voce", "voces", "vc", "vcs", "isso", "isto", "esse", "essa", "esses",
    "essas", "este", "esta", "estes", "estas", "aquele", "aquela", "aqueles", "aquelas", "aquilo", "eh", "sao",
    "ser", "foi", "foram", "era", "eram", "sera", "seria", "estao", "estava", "estou", "tem", "tenho", "ter",
    "teve", "tinha", "ha", "havia", "vai", "vou", "veio", "vem", "vieram", "fica", "ficou", "faz", "fez", "pode",
    "podem", "posso", "deve", "devem", "funciona", "funcionam", "funcionar", "significa", "significado", "quer",
    "dizer", "explica", "explique", "explicar", "definicao", "defina", "define", "sabe", "saber", "the", "of",
    "and", "to", "in", "is", "for", "on", "at", "by", "an", "be", "it", "what", "which", "how", "why", "hoje",
    "ontem", "amanha", "agora",
})
"""Function words, the verbs of a question ("o que significa ...") and the days a question is about ("ontem"):
they say nothing about which term is meant.
"te" (pronoun, and TE the energy tariff) is deliberately not here."""

_stemmer = snowballstemmer.stemmer("portuguese")


def fold(text: str) -> str:
    """Lower case without accents: ``"Tensão Crítica"`` -> ``"tensao critica"``."""
    return unidecode(text).lower()


def words(text: str) -> list[str]:
    """The words of ``text``, folded (see :func:`fold`), stop words included."""
    return _WORD_RE.findall(fold(text))


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """Snowball's Portuguese stem of one folded word (cached: a corpus repeats its words).

    A final ``s`` the Portuguese rules leave is dropped too (stems longer than three letters), so the English
    words of the docs meet their plurals ("rollups" and "rollup"); it happens on both sides of the search."""
    s = str(_stemmer.stemWord(word))
    return s[:-1] if len(s) > 3 and s.endswith("s") and not s.endswith("ss") else s


def content_words(text: str) -> list[str]:
    """The folded words of ``text`` that are not stop words, in order."""
    return [w for w in words(text) if w not in STOP_WORDS]


def terms(text: str) -> list[str]:
    """The stems of ``text``'s content words, in order (what the index stores and the query searches)."""
    return [stem(w) for w in content_words(text)]


class Vocabulary:
    """What the index knows, for reading a query: the *reference* words (the articles', written with care) that a
    typo is corrected towards, and every indexed stem (articles and docs).

    Only the articles are references because the docs also quote misspelled questions (the questions engine's
    page shows what it corrects): a typo found in a doc must still be read as the word it stands for."""

    def __init__(self, reference_words: Iterable[str], other_words: Iterable[str] = ()) -> None:
        self._stems: dict[str, str] = {}
        for w in reference_words:
            if w not in STOP_WORDS:
                self._stems.setdefault(w, stem(w))
        self.stems = frozenset(self._stems.values()) | {stem(w) for w in other_words if w not in STOP_WORDS}
        self._by_len: dict[int, list[str]] = {}
        for w in self._stems:
            if not w.isdigit():
                self._by_len.setdefault(len(w), []).append(w)

    def __len__(self) -> int:
        return len(self.stems)

    def correct(self, word: str) -> str | None:
        """The closest reference word to ``word`` (a folded content word), or None when nothing is close enough."""
        if len(word) < MIN_FUZZY_LEN or word.isdigit():
            return None
        candidates = [w for n in range(len(word) - 2, len(word) + 3) for w in self._by_len.get(n, ())]
        found = difflib.get_close_matches(word, candidates, n=1, cutoff=FUZZY_CUTOFF)
        return found[0] if found else None

    def query_terms(self, text: str) -> list[str]:
        """The stems to search for ``text``, order kept, duplicates removed: a reference word gives its stem; any
        other word is first matched to the closest reference word (a typo: "bandera" must not become the stem
        "band" of an English word in the docs), then taken by its own stem when that is indexed (another form
        of a word, a word of the docs), else dropped."""
        out: list[str] = []
        for w in content_words(text):
            if w in self._stems:
                s = self._stems[w]
            else:
                fixed = self.correct(w)
                s = self._stems[fixed] if fixed is not None else stem(w)
                if s not in self.stems:
                    continue
            if s not in out:
                out.append(s)
        return out
