"""What a question names: a configured site, a group of meters or one meter, matched with typos allowed.

Names come from the site configuration (:class:`~backend.questions.interpretation.Vocabulario`), folded like
the question (no accents, lower case, ``_``/``-`` as spaces) and compared with runs of the question's words of
the same length (``rapidfuzz`` Damerau–Levenshtein similarity ≥ 0,85; names shorter than six letters must match
exactly). A meter is named by its 16 hex digits or, after "medidor"/"dispositivo", by a unique ending of them
("medidor a1"). The matched words are taken out of the text so they do not count as cues for an intent.
"""

from __future__ import annotations

import re
from typing import Final

from rapidfuzz.distance import DamerauLevenshtein

from backend.questions.interpretation import Escopo, Vocabulario
from backend.questions.normalize import fold

_DEVICE: Final = re.compile(r"\b(?:(?:o |do |no )?(?:medidor|dispositivo|sensor|aparelho)(?: de)?(?: id| numero)? )?"
                            r"(?P<id>[0-9a-f]{16})\b")
_SUFFIX: Final = re.compile(r"\b(?:o |do |no )?(?:medidor|dispositivo|sensor|aparelho)(?: de)?(?: id| numero)? "
                            r"(?P<id>(?=[0-9a-f]*[0-9])[0-9a-f]{1,15})\b")
SIMILARITY: Final = 0.85


def names(vocab: Vocabulario) -> frozenset[str]:
    """Every word of every configured name (so the speller leaves them alone)."""
    out: set[str] = set()
    for site in vocab.sites:
        for name in (site.id, site.nome, *site.grupos):
            out.update(fold(name).split())
    return frozenset(out)


def _find(words: list[str], name: str) -> tuple[int, int] | None:
    target = fold(name)
    n = len(target.split())
    if not n:
        return None
    best: tuple[float, int] | None = None
    for i in range(len(words) - n + 1):
        candidate = " ".join(words[i:i + n])
        if candidate == target:
            return i, i + n
        if len(target) >= 6:
            sim = DamerauLevenshtein.normalized_similarity(candidate, target)
            if sim >= SIMILARITY and (best is None or sim > best[0]):
                best = (sim, i)
    return (best[1], best[1] + n) if best else None


def find_scope(text: str, vocab: Vocabulario) -> tuple[Escopo, str]:
    """The site, group or meter named in ``text`` (normalised words) and the text without those words."""
    site = grupo = device = None
    m = _DEVICE.search(text) or _SUFFIX.search(text)
    if m is not None:
        ident = m["id"]
        owners = [(s.id, d) for s in vocab.sites for d in s.dispositivos if d.endswith(ident)]
        if len(ident) == 16 or len(owners) == 1:
            device = ident if len(ident) == 16 else owners[0][1]
            site = next((s for s, d in owners if d == device), None)
            text = text[:m.start()] + " " + text[m.end():]
    words = text.split()
    if device is None:
        found = [(s.id, g, span) for s in vocab.sites for g in s.grupos if (span := _find(words, g))]
        if found:
            site_ids = {s for s, _, _ in found}
            _, grupo, (a, b) = found[0]
            site = site_ids.pop() if len(site_ids) == 1 else None
            words = words[:a] + words[b:]
    for s in vocab.sites:
        spans = [span for name in (s.nome, s.id) if name and (span := _find(words, name))]
        if spans:
            if site is None or site == s.id:
                site = s.id
                a, b = spans[0]
                words = words[:a] + words[b:]
            break
    return Escopo(site=site, grupo=grupo, device=device), " ".join(words)
