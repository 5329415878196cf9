"""alignment_vis.py (Fig. 1 for any artifact): word parsing, tokenisation, end to end on a tiny model."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

pytest.importorskip("transformers")

from tokenizers import normalizers  # noqa: E402

import alignment_vis as av  # noqa: E402

# --- --words parsing -----------------------------------------------------------------------------


def test_parse_words_default_and_whitespace():
    groups = av.parse_words(av.DEFAULT_WORDS)
    assert groups == {"Joy": ["lovely", "enjoyable", "amazing", "delighted"],
                      "Sad": ["horrible", "disappointing", "unhappy", "lonely"],
                      "Be": ["am", "is", "are", "was", "were"]}
    assert av.parse_words(" A = x , y ; B=z; ") == {"A": ["x", "y"], "B": ["z"]}


@pytest.mark.parametrize("spec,message", [
    ("", "empty"),
    ("Joy lovely", "has no '='"),
    ("Joy=a;;Sad=b", "empty part between two ';'"),
    ("=a,b", "empty name"),
    ("Joy=", "has no words"),
    ("Joy=a,,b", "empty word"),
    ("Joy=a,b,", "empty word"),
    ("Joy=a;Joy=b", "given twice"),
    ("Joy=a,a", "twice in 'Joy'"),
    ("Joy=a;Sad=a", "in both 'Joy' and 'Sad'"),
    ("Joy=a,Sad=b", "second '='"),
])
def test_parse_words_malformed(spec, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        av.parse_words(spec)


def test_parse_args_reports_malformed_words(capsys):
    with pytest.raises(SystemExit) as e:
        av.parse_args(["--words", "Joy:lovely"])
    assert e.value.code == 2 and "has no '='" in capsys.readouterr().err


# --- tokenisation ------------------------------------------------------------------------------------


def test_word_tokens_exclude_bos_and_empty_word_is_an_error(make_tokenizer):
    tok = make_tokenizer(prepend_bos=True)
    ids, pos = av.word_token_positions(tok, "happy")
    assert ids == [tok.bos_token_id, tok.convert_tokens_to_ids("happy")] and pos == [1]
    ids, pos = av.word_token_positions(tok, "happy", add_special_tokens=False)
    assert ids == [tok.convert_tokens_to_ids("happy")] and pos == [0]
    tok._tokenizer.normalizer = normalizers.Replace("~", "")  # "~~" normalises to nothing
    with pytest.raises(ValueError, match="'~~' tokenises to no tokens"):
        av.word_token_positions(tok, "~~")


def test_unknown_word_is_refused_unless_allowed(make_tokenizer, tiny_model):
    tok = make_tokenizer(prepend_bos=True)
    net = tiny_model("llama", vocab_size=len(tok)).model
    with pytest.raises(ValueError, match="unknown token"):
        av.word_states(net, tok, ["happy", "lovely"], 0, 3, "cpu")
    H, info = av.word_states(net, tok, ["happy", "lovely"], 0, 3, "cpu", allow_unk=True)
    assert H.shape == (2, 32) and info[1]["tokens"] == ["<s>", "<unk>"]


# --- end to end ----------------------------------------------------------------------------------------


def test_end_to_end_on_tiny_model(tmp_path, bos_model_dir, capsys, make_tokenizer, tiny_model, make_vis_artifact,
                                  vis_words):
    stats_dir = make_vis_artifact(tmp_path / "art", bos_model_dir)
    rec = av.main(av.parse_args(["--stats_dir", str(stats_dir), "--words", vis_words, "--dpi", "40"]))
    out = stats_dir / "alignment_vis" / "layer0"
    for name in ("projections.json", "projections.csv", "fig1.pdf", "fig1.png", "fig1_boundaries.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    data = json.loads((out / "projections.json").read_text())
    # the authors' nesting: {"U"|"V": {category: [[[x, y]], ...]}}, words in the given order
    for space in ("U", "V"):
        assert list(data[space]) == ["Joy", "Sad", "Be"]
        for cat, ws in av.parse_words(vis_words).items():
            assert np.asarray(data[space][cat]).shape == (len(ws), 1, 2)
    assert data["words"] == av.parse_words(vis_words)
    assert data["meta"]["layer"] == 0 and data["meta"]["label_rank"] == 2 and not data["meta"]["padded_U"]
    assert data["tokens"]["happy"]["tokens"] == ["<s>", "happy"]
    assert set(data["separability"]) == {"U", "V"}
    rows = list(csv.DictReader(open(out / "projections.csv")))
    assert list(rows[0]) == av.CSV_COLUMNS and len(rows) == 2 * 6
    for r in rows:
        i = av.parse_words(vis_words)[r["category"]].index(r["word"])
        assert [float(r["x"]), float(r["y"])] == data[r["space"]][r["category"]][i][0]
    # layer 0: a word's point is its token embedding (BOS excluded) on the Σ̂-orthonormal directions
    model = tiny_model("llama", vocab_size=len(make_tokenizer()))
    emb = model.get_input_embeddings().weight.detach().double().numpy()
    from ntps.artifacts import load_stats
    dirs = av.top_directions(load_stats(stats_dir, [0]).layers[0], 120)
    happy = emb[data["tokens"]["happy"]["ids"][1]]
    np.testing.assert_allclose(data["U"]["Joy"][0][0], happy @ dirs["U"], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(data["V"]["Joy"][0][0], happy @ dirs["V"], rtol=1e-6, atol=1e-9)
    printed = capsys.readouterr().out
    assert "Joy-vs-Sad separability" in printed and rec["U"] == data["U"]


def test_directions_are_normalised_and_oriented(tmp_path, bos_model_dir, make_vis_artifact):
    from ntps.artifacts import load_stats

    sums = load_stats(make_vis_artifact(tmp_path / "art", bos_model_dir), [1]).layers[1]
    dirs = av.top_directions(sums, 120)
    Sigma = sums.XX.numpy() / 120
    np.testing.assert_allclose(dirs["U"].T @ Sigma @ dirs["U"], np.eye(2), atol=1e-8)
    assert np.all(sums.sum_x.numpy() @ dirs["U"] > 0) and np.all(sums.sum_x.numpy() @ dirs["V"] > 0)
    unit = av.top_directions(sums, 120, scale="unit")
    np.testing.assert_allclose(np.linalg.norm(unit["U"], axis=0), 1.0)
    np.testing.assert_allclose(unit["U"], dirs["U"] / np.linalg.norm(dirs["U"], axis=0))


def test_rank_one_labels_pad_with_null_direction_and_say_so(tmp_path, bos_model_dir, caplog, monkeypatch,
                                                            make_vis_artifact, vis_words):
    from fig_plot import fig1
    from ntps.artifacts import load_stats

    stats_dir = make_vis_artifact(tmp_path / "art", bos_model_dir, rank1=True)
    sums = load_stats(stats_dir, [2]).layers[2]
    dirs = av.top_directions(sums, 120)
    assert dirs["label_rank"] == 1 and dirs["padded"] and dirs["values_U"][1] == 0.0
    # the padding direction is the second column of a Σ̂-orthonormal basis
    np.testing.assert_allclose(dirs["U"].T @ (sums.XX.numpy() / 120) @ dirs["U"], np.eye(2), atol=1e-8)
    monkeypatch.setattr(fig1, "main", lambda args: {})  # the figure itself is tested above
    rec = av.main(av.parse_args(["--stats_dir", str(stats_dir), "--words", vis_words, "--layer", "-1",
                                 "--out_dir", str(tmp_path / "o")]))
    assert rec["meta"]["layer"] == 2 and rec["meta"]["label_rank"] == 1 and rec["meta"]["padded_U"]
    assert "label rank 1 < 2" in caplog.text


def test_model_width_mismatch_is_a_clear_error(tmp_path, bos_model_dir, make_vis_artifact, vis_words):
    stats_dir = make_vis_artifact(tmp_path / "art", bos_model_dir, d=16)
    with pytest.raises(ValueError, match="d = 32 but the artifact was computed with d = 16"):
        av.main(av.parse_args(["--stats_dir", str(stats_dir), "--words", vis_words]))
