"""What the knowledge base indexes: the pt-BR articles in ``artigos/`` and the project's docs, section by section.

An article is one Markdown file per term, with a small header that gives its title, the other names people use
for it and the regulation or document it comes from (the citation every answer carries)::

    ---
    titulo: Bandeiras tarifárias
    termos: bandeira verde, bandeira amarela, bandeira vermelha, patamar 1, escassez hídrica
    fonte: ANEEL, REN nº 1.000/2021 (art. 307) e REH nº 3.306/2024
    ---
    # Bandeiras tarifárias

    First paragraph: the definition, in one or two sentences (what "o que é ..." answers with).

    ## Further sections ...

A doc (``docs/*.md``) becomes one passage per heading of level 1 to 3, cited as the file and the section.
Headings inside fenced code blocks are code, not sections. Markdown is reduced to plain text for the index
and the snippets (no table pipes, emphasis, backticks or link targets).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Final, Literal

import msgspec

from backend.errors import BackendError

ARTICLES_DIR: Final = Path(__file__).resolve().parent / "artigos"
_REPO: Final = Path(__file__).resolve().parents[2]
REPO_DOCS_DIR: Final = _REPO / "docs"
"""The repo's docs/ (present in a source checkout; an installed wheel has no docs)."""
REQUIRED_KEYS: Final = ("titulo", "termos", "fonte")

Kind = Literal["artigo", "doc"]


class KnowledgeError(BackendError):
    """An article or doc cannot be read or is malformed (missing header, key or definition)."""


class Entry(msgspec.Struct, frozen=True):
    """One indexable passage: a whole article, or one section of a doc."""

    id: str
    """``artigo:<file stem>`` or ``doc:<file name>#<anchor>``."""
    kind: Kind
    title: str
    aliases: str
    """Other names of the term (articles) or the headings above the section (docs)."""
    body: str
    """Plain text of the passage, paragraphs separated by blank lines."""
    source: str
    """The citation: the regulation/document for an article, the file and section for a doc."""
    ref: str
    """Where to read it in the repo: ``backend/knowledge/artigos/x.md`` or ``docs/x.md#anchor``."""
    lead: str = ""
    """The article's first paragraph (its definition); empty for docs."""
    headings: str = ""
    """The headings inside the passage (searched like the body, never shown as a snippet)."""


_FENCE_RE: Final = re.compile(r"^\s*(```|~~~)")
_HEADING_RE: Final = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_LINK_RE: Final = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_TABLE_RULE_RE: Final = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")


def plain(markdown: str) -> str:
    """Markdown reduced to readable plain text (one line per source line, blank lines kept)."""
    out: list[str] = []
    for line in markdown.splitlines():
        if _FENCE_RE.match(line) or _TABLE_RULE_RE.match(line):
            continue
        line = _LINK_RE.sub(r"\1", line)
        line = re.sub(r"^\s*#{1,6}\s+", "", line)
        line = re.sub(r"^\s*[-*+]\s+", "", line)
        line = re.sub(r"^\s*>\s?", "", line)
        line = line.replace("`", "").replace("**", "").replace("__", "")
        line = re.sub(r"(?<!\w)\*(?=\S)|(?<=\S)\*(?!\w)", "", line)
        if line.strip().startswith("|"):  # a table row: its own paragraph, cells joined by " · "
            out += [" · ".join(c.strip() for c in line.strip().strip("|").split("|") if c.strip()), ""]
            continue
        out.append(line.rstrip())
    return "\n".join(out).strip()


def split_headings(markdown: str) -> tuple[str, list[str]]:
    """The Markdown without its heading lines (outside code blocks), and the headings' plain text."""
    body: list[str] = []
    headings: list[str] = []
    in_code = False
    for line in markdown.splitlines():
        if _FENCE_RE.match(line):
            in_code = not in_code
        m = None if in_code else _HEADING_RE.match(line)
        if m:
            headings.append(plain(m.group(2)))
            body.append("")
        else:
            body.append(line)
    return "\n".join(body), headings


def paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs, each joined into one line."""
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


def parse_article(path: Path, ref: str) -> Entry:
    """One article file; KnowledgeError names the file and what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KnowledgeError(f"{ref}: cannot read: {exc}") from exc
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---" or "---" not in (ln.strip() for ln in lines[1:]):
        raise KnowledgeError(f"{ref}: the article must start with a '---' header (titulo, termos, fonte)")
    end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    header: dict[str, str] = {}
    for ln in lines[1:end]:
        if ln.strip():
            key, sep, value = ln.partition(":")
            if not sep:
                raise KnowledgeError(f"{ref}: header line {ln!r} is not 'chave: valor'")
            header[key.strip().lower()] = value.strip()
    missing = [k for k in REQUIRED_KEYS if not header.get(k)]
    if missing:
        raise KnowledgeError(f"{ref}: header lacks {', '.join(missing)}")
    body_md, headings = split_headings("\n".join(lines[end + 1:]))
    paras = paragraphs(plain(body_md))
    if not paras:
        raise KnowledgeError(f"{ref}: the article has no text")
    # the "# Title" line repeats the header's titulo; the definition is the first paragraph after it
    return Entry(id=f"artigo:{path.stem}", kind="artigo", title=header["titulo"], aliases=header["termos"],
                 body="\n\n".join(paras), source=header["fonte"], ref=ref, lead=paras[0],
                 headings=" · ".join(h for h in headings if h != header["titulo"]))


def parse_doc(path: Path, ref: str) -> list[Entry]:
    """One doc file as one entry per section (heading levels 1-3; deeper headings are searched with their
    section but not shown in snippets)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KnowledgeError(f"{ref}: cannot read: {exc}") from exc
    sections: list[tuple[int, str, list[str]]] = []
    in_code = False
    for line in text.splitlines():
        if _FENCE_RE.match(line):
            in_code = not in_code
        m = None if in_code else _HEADING_RE.match(line)
        if m and len(m.group(1)) <= 3:
            sections.append((len(m.group(1)), m.group(2), []))
        elif sections:
            sections[-1][2].append(line)
        else:
            sections.append((1, path.stem, [line]))
    doc_title = next((h for level, h, _ in sections if level == 1), path.stem)
    entries: list[Entry] = []
    trail: list[str] = []
    for level, heading, body_lines in sections:
        trail = [*trail[: level - 1], heading]
        body_md, inner = split_headings("\n".join(body_lines))
        body = "\n\n".join(paragraphs(plain(body_md)))
        if not body:
            continue
        anchor = slug(heading)
        title = heading if heading == doc_title else f"{doc_title} — {heading}"
        entries.append(Entry(
            id=f"doc:{path.name}#{anchor}", kind="doc", title=title, aliases=" ".join(plain(h) for h in trail[:-1]),
            body=body, source=f"Documentação do CDS, {ref} — seção “{plain(heading)}”", ref=f"{ref}#{anchor}",
            headings=" · ".join(inner)))
    return entries


def repo_ref(path: Path) -> str:
    """``path`` relative to the repo (``docs/api.md``), or as given when it lies elsewhere."""
    try:
        return path.resolve().relative_to(_REPO).as_posix()
    except ValueError:
        return path.as_posix()


def source_files(articles_dir: Path, docs_dir: Path | None) -> list[Path]:
    """Every file the index is built from, sorted (articles first)."""
    files = sorted(articles_dir.glob("*.md"))
    if docs_dir is not None and docs_dir.is_dir():
        files += sorted(docs_dir.glob("*.md"))
    return files


def load(articles_dir: Path, docs_dir: Path | None) -> Iterator[Entry]:
    """All entries: the articles (``ref`` relative to the repo), then each doc's sections."""
    for path in sorted(articles_dir.glob("*.md")):
        yield parse_article(path, repo_ref(path))
    if docs_dir is not None and docs_dir.is_dir():
        for path in sorted(docs_dir.glob("*.md")):
            yield from parse_doc(path, repo_ref(path))
