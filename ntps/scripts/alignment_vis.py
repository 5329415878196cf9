"""Fig. 1 for any statistics artifact: words projected on the top-2 perception (U) and autoregressive (V)
directions of one layer (SPEC §3).

Protocol (the paper's Fig. 1, generalised to any artifact, layer and word list):

1. From the artifact's sums at ``--layer`` (0 = embedding output), solve the two problems of SPEC §2 in
   descending order (the paper's top directions) with every sum divided by the number of texts N, as the
   authors do: ``U`` from ``(M Mᵀ) u = λ Σ u``, ``V`` from ``(C1 C1ᵀ) v = λ C0 v``; keep the first two
   columns of each.
2. Each word is tokenised **alone** (no context), with the tokenizer's special tokens as in the statistics
   (BOS where the tokenizer adds one, SPEC §1; ``--no_special_tokens`` drops them). The sequence goes
   through the model and the word's states at the layer are averaged over **the word's own tokens only**
   (special tokens are fed for context but never averaged). At layer 0 this is the mean of the word's
   token embeddings (up to absolute position embeddings in models that have them).
3. Coordinates are ``uᵀh`` and ``vᵀh`` with the directions as solved (``--direction_scale authors``):
   U columns are Σ̂-orthonormal (uᵀ (XX/N) u = 1, so over the training texts the mean of (uᵀx)² is 1),
   V columns C0/N-orthonormal -- the scale of the authors' ``fig1.json``. ``--direction_scale unit``
   rescales each direction to unit Euclidean norm instead (plain projections; the two directions of a
   panel are then unit vectors but not orthogonal in general).
4. Eigenvectors have no sign: each direction is flipped so that the mean training representation
   (``sum_x`` of the artifact) projects positively on it; where that projection vanishes, so that the
   entry of largest magnitude is positive. Deterministic and independent of the words.
5. Degenerate label rank (SPEC §2.0): U has at most C non-zero directions. If fewer than two exist
   (C = 1 effective rank, e.g. a rank-1 M), the second U coordinate is the top direction of the null
   block (λ = 0, ordered by Σ-variance, :mod:`ntps.linalg`); this is printed and recorded as ``padded``.

Outputs in ``--out_dir`` (default ``{stats_dir}/alignment_vis/layer{L}``):

- ``projections.json``: ``{"U"|"V": {category: [[[x, y]], ...]}}`` in the exact nesting of the authors'
  ``fig_plot/data/fig1.json`` (one ``[[x, y]]`` per word, words in the order given), plus ``words``,
  per-word tokens, the eigenvalues, label rank, choices and provenance, and the Joy-vs-Sad separability;
- ``projections.csv``: ``space,category,word,x,y`` (the ``--csv`` input of ``fig_plot/fig1.py``);
- ``fig1.pdf``/``fig1.png`` and ``fig1_boundaries.json`` drawn by ``fig_plot/fig1.py``, which fits the
  logistic Joy-vs-Sad boundary per panel on standardised coordinates (only if categories named ``Joy``
  and ``Sad`` exist). Its training accuracy (the separability) is printed per panel.

Examples:
    python alignment_vis.py                                     # the default artifact, layer 0
    python alignment_vis.py --stats_dir outputs/Qwen__Qwen2-0.5B/emotion/train --layer 12
    python alignment_vis.py --words "Joy=happy,glad;Sad=sad,gloomy;Be=is,was" --direction_scale unit
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ntps import cli
from ntps.artifacts import load_stats, read_meta
from ntps.cli import resolve_device
from ntps.io import environment_info, writable_dir, write_csv, write_json
from ntps.linalg import DEFAULT_RCOND, generalized_eigh
from ntps.provenance import artifact_files, file_digests, model_digests
from ntps.score import solve_layer

DEFAULT_WORDS = ("Joy=lovely,enjoyable,amazing,delighted;Sad=horrible,disappointing,unhappy,lonely;"
                 "Be=am,is,are,was,were")
DIRECTION_SCALES = ("authors", "unit")
CSV_COLUMNS = ["space", "category", "word", "x", "y"]
log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# words
# ----------------------------------------------------------------------------------------------

def parse_words(spec: str) -> dict[str, list[str]]:
    """``"Joy=lovely,amazing;Sad=horrible;Be=is"`` -> ``{"Joy": ["lovely", "amazing"], ...}``.

    Categories are separated by ``;`` (a trailing one is allowed), words by ``,``; surrounding
    whitespace is stripped (a word may contain inner spaces: it is then tokenised as one phrase).
    Raises ``ValueError`` naming the offending part for a missing ``=``, an empty category name or
    word, a repeated category, or a word listed twice.
    """
    if spec is None or not str(spec).strip():
        raise ValueError("--words is empty: expected e.g. 'Joy=lovely,amazing;Sad=horrible,lonely'")
    parts = [p.strip() for p in str(spec).split(";")]
    if parts and parts[-1] == "":
        parts = parts[:-1]
    out: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    for i, part in enumerate(parts, 1):
        if "=" not in part:
            raise ValueError(f"--words: category {i} ({part!r}) has no '=': expected 'Category=word1,word2'"
                             + (" (empty part between two ';')" if not part else ""))
        name, _, rest = part.partition("=")
        name = name.strip()
        if not name:
            raise ValueError(f"--words: category {i} ({part!r}) has an empty name before '='")
        if "=" in rest:
            raise ValueError(f"--words: category {name!r} has a second '=' ({part!r}); "
                             "separate categories with ';'")
        if name in out:
            raise ValueError(f"--words: category {name!r} is given twice")
        words = [w.strip() for w in rest.split(",")]
        if not rest.strip():
            raise ValueError(f"--words: category {name!r} has no words")
        if any(not w for w in words):
            raise ValueError(f"--words: category {name!r} has an empty word ({rest!r}: "
                             "doubled or trailing ',')")
        for w in words:
            if w in seen:
                where = "twice in" if seen[w] == name else f"in both {seen[w]!r} and"
                raise ValueError(f"--words: word {w!r} is listed {where} {name!r}")
            seen[w] = name
        out[name] = words
    return out


def word_token_positions(tokenizer, word: str, add_special_tokens: bool = True,
                         leading_space: bool = False) -> tuple[list[int], list[int]]:
    """Token ids of ``word`` tokenised alone, and the positions of the word's own tokens in them.

    With ``add_special_tokens`` the tokenizer adds what it adds to any text (BOS for most decoders);
    those positions are excluded via the special-tokens mask. Raises ``ValueError`` when the word
    yields no token of its own.
    """
    text = (" " + word) if leading_space else word
    enc = tokenizer(text, add_special_tokens=add_special_tokens, return_special_tokens_mask=True)
    ids = list(enc["input_ids"])
    mask = list(enc.get("special_tokens_mask") or [0] * len(ids))
    positions = [i for i, m in enumerate(mask) if not m]
    if not positions:
        raise ValueError(f"word {word!r} tokenises to no tokens of its own (ids {ids}): the tokenizer drops "
                         "it entirely; choose another word")
    return ids, positions


@torch.inference_mode()
def word_states(net, tokenizer, words: list[str], layer: int, n_states: int, device, *,
                add_special_tokens: bool = True, leading_space: bool = False,
                allow_unk: bool = False) -> tuple[np.ndarray, list[dict]]:
    """(n_words, d) float64 states of each word at ``layer``, averaged over the word's own tokens.

    Returns the states and, per word, ``{"word", "ids", "tokens", "positions"}``.
    """
    states, info = [], []
    unk = getattr(tokenizer, "unk_token_id", None)
    for word in words:
        ids, pos = word_token_positions(tokenizer, word, add_special_tokens, leading_space)
        if unk is not None and not allow_unk and any(ids[p] == unk for p in pos):
            raise ValueError(f"word {word!r} maps (partly) to the unknown token {tokenizer.unk_token!r}: "
                             "its point would be that of the unknown token, not the word's. Choose another "
                             "word or pass --allow_unk")
        input_ids = torch.tensor([ids], dtype=torch.long, device=device)
        out = net(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), output_hidden_states=True,
                  use_cache=False)
        hs = out.hidden_states
        if len(hs) != n_states:
            raise RuntimeError(f"model returned {len(hs)} hidden states, its config says {n_states}")
        h = hs[layer][0, pos].to(torch.float64).mean(0)
        states.append(h.cpu().numpy())
        info.append({"word": word, "ids": ids, "tokens": tokenizer.convert_ids_to_tokens(ids),
                     "positions": pos})
    return np.stack(states), info


# ----------------------------------------------------------------------------------------------
# directions
# ----------------------------------------------------------------------------------------------

def orient(D: np.ndarray, mean_x: np.ndarray) -> np.ndarray:
    """Flip each column of ``D`` (d, k) so that ``mean_x`` projects positively on it; where that
    projection is (numerically) zero, so that the column's entry of largest magnitude is positive."""
    D = D.copy()
    scale = np.linalg.norm(D, axis=0) * max(float(np.linalg.norm(mean_x)), np.finfo(float).tiny)
    proj = mean_x @ D
    for j in range(D.shape[1]):
        s = np.sign(proj[j]) if abs(proj[j]) > 1e-10 * scale[j] else np.sign(D[np.argmax(np.abs(D[:, j])), j])
        D[:, j] *= s if s != 0 else 1.0
    return D


def top_directions(sums, n_texts: int, *, rcond: float = DEFAULT_RCOND, scale: str = "authors") -> dict:
    """The top-2 U and V directions of one layer (SPEC §2, descending), oriented and scaled.

    Returns ``{"U": (d, 2), "V": (d, 2), "values_U", "values_V", "label_rank", "padded", "r_U", "r_V"}``.
    Sums are divided by ``n_texts`` first (the authors' normalisation; only the vectors' scale depends on it).
    """
    if scale not in DIRECTION_SCALES:
        raise ValueError(f"direction scale must be one of {DIRECTION_SCALES}, got {scale!r}")
    n = float(n_texts)
    XX, XY, C0, C1 = (getattr(sums, k).to(torch.float64) / n for k in ("XX", "XY", "C0", "C1"))
    sol = solve_layer(XX, XY, C0, C1, rcond=rcond, order="descending")
    label_rank = sol.label_rank
    if label_rank == 0:
        raise ValueError("the perception problem has no non-zero eigenvalue (M = XY is zero on the range "
                         "of Σ): the artifact carries no label information at this layer")
    U, values_U, padded = sol.U.vectors[:, :2], sol.U.values[:2], False
    if label_rank < 2:
        full = generalized_eigh(XX, A_factor=XY, rcond=rcond, order="descending", only_nonzero=False,
                                name_A="XY (M)", name_B="XX (Σ)")
        if full.vectors.shape[1] < 2:
            raise ValueError(f"Σ has rank {full.rank} at this layer: fewer than two U directions exist")
        U, values_U, padded = full.vectors[:, :2], full.values[:2], True
    if sol.V.vectors.shape[1] < 2:
        raise ValueError(f"C0 has rank {sol.V.rank} at this layer: fewer than two V directions exist")
    V, values_V = sol.V.vectors[:, :2], sol.V.values[:2]
    mean_x = (sums.sum_x.to(torch.float64) / n).cpu().numpy()
    out = {}
    for name, D in (("U", U), ("V", V)):
        D = D.cpu().numpy()
        if scale == "unit":
            D = D / np.linalg.norm(D, axis=0)
        out[name] = orient(D, mean_x)
    out.update(values_U=values_U.cpu().numpy(), values_V=values_V.cpu().numpy(), label_rank=label_rank,
               padded=padded, r_U=sol.U.rank, r_V=sol.V.rank)
    return out


# ----------------------------------------------------------------------------------------------
# script
# ----------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = cli.parser("alignment_vis.py", __doc__)
    g = cli.add_artifact_args(p, what=f"artifact directory written by cache.py (looked up with model "
                                      f"{cli.DEFAULT_MODEL} when --model is not given)", model=None)
    g.add_argument("--layer", type=int, default=0, help="hidden-state index (0 = embedding output; -1 = last)")
    g.add_argument("--words", default=DEFAULT_WORDS,
                   help="'Category=word,word;Category=...' (SPEC §3 default); a Joy-vs-Sad boundary is drawn "
                        "when categories named Joy and Sad exist")
    g = cli.add_model_args(p, from_artifact=True)
    g.add_argument("--lora_ckpt", default=None, help="PEFT adapter to merge (default: the artifact's, if any)")
    cli.add_device_arg(g, default="cpu", help="cpu, auto, cuda, cuda:N (a handful of words: cpu is fine)")
    g = p.add_argument_group("protocol")
    g.add_argument("--no_special_tokens", action="store_true",
                   help="tokenise words without BOS/EOS (default: as the tokenizer does for any text)")
    g.add_argument("--leading_space", action="store_true",
                   help="tokenise ' word' (mid-sentence form) instead of 'word' (the word alone)")
    g.add_argument("--allow_unk", action="store_true", help="plot words that map to the unknown token")
    g.add_argument("--direction_scale", choices=DIRECTION_SCALES, default="authors",
                   help="authors = directions as solved from the sums / N (Σ̂- and C0/N-orthonormal); "
                        "unit = unit Euclidean norm")
    g.add_argument("--rcond", type=float, default=DEFAULT_RCOND,
                   help="relative eigenvalue tolerance (SPEC §2)")
    g = cli.add_output_args(p, default=None, overwrite=None,
                            help="output root: the figure goes to {output_dir}/{model}/{dataset}/{split}/"
                                 "alignment_vis/layer{L} of the artifact (default: beside the artifact)")
    g.add_argument("--out_dir", default=None, help="exact folder of the figure files (overrides --output_dir)")
    g.add_argument("--formats", nargs="+", default=["pdf", "png"])
    g.add_argument("--dpi", type=int, default=200)
    g.add_argument("--no_labels", action="store_true", help="do not write the words beside the points")
    cli.alias(p, "--i_layer", "--layer")
    cli.authors_note(p, lambda a: not a.no_special_tokens, "a word's state is averaged over its own tokens here "
                     "(BOS excluded); the authors' alignment_vis averages over the BOS token too")
    args = cli.parse(p, argv)
    try:
        args.word_groups = parse_words(args.words)
    except ValueError as e:
        p.error(str(e))
    return args


def _default(value, fallback):
    return fallback if value is None else value


def _model_of(args, meta: dict) -> dict:
    """The model to run: ``--model`` etc., each defaulting to the artifact's record (revision, tokenizer,
    LoRA adapter, dtype) when the model is the artifact's."""
    minfo = meta.get("model_info") or {}
    name = _default(args.model, meta.get("model"))
    if not name:
        raise ValueError("the artifact's meta.json records no model: pass --model")
    same = args.model is None or args.model == meta.get("model")
    tokenizer = args.tokenizer_name
    if tokenizer is None and same and minfo.get("tokenizer") not in (None, name):
        tokenizer = minfo["tokenizer"]
    recorded = meta.get("dtype") if meta.get("dtype") in ("float32", "bfloat16", "float16") else "auto"
    return {"name": name, "same": same, "revision": _default(args.revision, meta.get("revision") if same else None),
            "tokenizer": tokenizer, "lora": _default(args.lora_ckpt, meta.get("lora_ckpt") if same else None),
            "dtype": _default(args.dtype, recorded)}


def _load_model(args, m: dict, d: int, n_states: int, meta: dict):
    """(decoder, tokenizer, info, device) of ``m``, checked against the artifact's width and depth."""
    from ntps.models import load_model_and_tokenizer
    from ntps.text import decoder_of

    device = resolve_device(args.device)
    model, tok, info = load_model_and_tokenizer(m["name"], revision=m["revision"], tokenizer_name=m["tokenizer"],
                                                trust_remote_code=args.trust_remote_code, dtype=m["dtype"],
                                                device=device, lora_ckpt=m["lora"])
    if info["hidden_size"] != d:
        raise ValueError(f"model {m['name']} has d = {info['hidden_size']} but the artifact was computed with "
                         f"d = {d} (model {meta.get('model')}): pass the artifact's model")
    if info["n_states"] != n_states:
        raise ValueError(f"model {m['name']} has {info['n_states']} hidden states but the artifact {n_states} "
                         f"(model {meta.get('model')}): pass the artifact's model")
    if not m["same"]:
        log.info(f"note: projecting states of {m['name']} on directions from {meta.get('model')}")
    elif m["lora"] == meta.get("lora_ckpt"):
        now, then = model_digests(info, m["lora"]), meta.get("model_digests") or {}
        changed = [k for k in ("weights_sha256", "lora_sha256", "commit") if then.get(k) and now[k] != then[k]]
        if changed:
            raise ValueError(f"the files of model {m['name']} changed since the artifact was computed "
                             f"({', '.join(changed)} differ): its directions would meet states of other weights. "
                             "Rerun cache.py --overwrite")
    return decoder_of(model), tok, info, device


def main(args) -> dict:
    stats_dir = cli.locate_artifact(args.stats_dir, args.output_dir, args.model or cli.DEFAULT_MODEL, args.dataset,
                                    args.split)
    meta = read_meta(stats_dir)
    n_states_meta = int(meta.get("n_states") or max(meta["layers"]) + 1)
    layer = args.layer + n_states_meta if args.layer < 0 else args.layer
    stats = load_stats(stats_dir, layers=[layer])
    inputs = file_digests(artifact_files(stats_dir, "meta.json", "stats.safetensors"))
    m = _model_of(args, meta)
    groups = args.word_groups
    words = [w for ws in groups.values() for w in ws]
    out_dir = Path(args.out_dir or cli.results_dir(stats_dir, meta, args.output_dir, args.stats_dir is not None)
                   / "alignment_vis" / f"layer{layer}")
    writable_dir(out_dir, "pass --out_dir or --output_dir with a writable folder")
    log.info(f"artifact {stats_dir}: {meta.get('model')} on {meta.get('dataset')}/{meta.get('split')}, "
             f"N = {stats.n_texts}, d = {stats.d}, C = {stats.num_classes}; layer {layer} (0 = embedding output)")
    log.info(f"model {m['name']}" + (f" @ {m['revision']}" if m["revision"] else "")
             + (f", tokenizer {m['tokenizer']}" if m["tokenizer"] else "")
             + (f", LoRA {m['lora']}" if m["lora"] else "")
             + f", {m['dtype']}; {len(words)} words in {len(groups)} categories; "
             f"directions: {args.direction_scale} scale")
    try:
        dirs = top_directions(stats.layers[layer], stats.n_texts, rcond=args.rcond, scale=args.direction_scale)
    except ValueError as e:
        raise ValueError(f"layer {layer}: {e}") from e
    if dirs["padded"]:
        log.warning(f"WARNING: label rank {dirs['label_rank']} < 2: only one U direction carries label "
                    "information; the second U coordinate is the top null-space direction (λ = 0, largest "
                    "Σ-variance)")
    net, tok, info, device = _load_model(args, m, stats.d, n_states_meta, meta)
    H, tokens = word_states(net, tok, words, layer, info["n_states"], device,
                            add_special_tokens=not args.no_special_tokens, leading_space=args.leading_space,
                            allow_unk=args.allow_unk)

    points, rows = projections(H, dirs, groups)
    record = {
        **points,
        "words": groups,
        "tokens": {t["word"]: {"ids": t["ids"], "tokens": t["tokens"], "averaged_positions": t["positions"]}
                   for t in tokens},
        "meta": {
            "figure": "fig1", "layer": layer, "stats_dir": str(stats_dir), "inputs": inputs,
            "artifact": {k: meta.get(k) for k in ("model", "dataset", "split", "n_texts", "d", "num_classes",
                                                  "fingerprint")},
            "model": m["name"], "model_info": info,
            "protocol": {"order": "descending", "direction_scale": args.direction_scale,
                         "sums_divided_by": "N", "special_tokens": not args.no_special_tokens,
                         "leading_space": args.leading_space,
                         "averaged_over": "the word's own tokens (special tokens excluded)",
                         "sign": "mean training representation (sum_x / N) projects positively",
                         "rcond": args.rcond},
            "label_rank": dirs["label_rank"], "padded_U": dirs["padded"], "r_U": dirs["r_U"],
            "r_V": dirs["r_V"],
            "eigenvalues": {"U": dirs["values_U"], "V": dirs["values_V"]},
            "direction_norms": {s: np.linalg.norm(dirs[s], axis=0) for s in ("U", "V")},
            "environment": environment_info(),
        },
    }
    json_path, csv_path = out_dir / "projections.json", out_dir / "projections.csv"
    write_json(json_path, record)
    write_csv(csv_path, rows, CSV_COLUMNS)

    from fig_plot import fig1

    fig_argv = ["--csv", str(csv_path), "--out_dir", str(out_dir), "--dpi", str(args.dpi),
                "--formats", *args.formats]
    summary = fig1.main(fig1.parse_args(fig_argv + (["--no_labels"] if args.no_labels else [])))
    record["separability"] = {space: {"joy_vs_sad_train_acc": s["joy_vs_sad_train_acc"]}
                              for space, s in summary.items()}
    write_json(json_path, record)

    _print_summary(layer, meta, dirs, summary)
    print(f"wrote {json_path}, {csv_path} and the figure in {out_dir}")
    return record


def projections(H: np.ndarray, dirs: dict, groups: dict[str, list[str]]) -> tuple[dict, list[dict]]:
    """The words' (n_words, d) states ``H`` on the two U and V directions: ``{"U"|"V": {category:
    [[[x, y]], ...]}}`` (the authors' nesting, words in the given order) and the CSV rows."""
    proj = {space: H @ dirs[space] for space in ("U", "V")}  # (n_words, 2)
    index = {w: i for i, w in enumerate(w for ws in groups.values() for w in ws)}
    points = {space: {cat: [[[float(P[index[w], 0]), float(P[index[w], 1])]] for w in ws]
                      for cat, ws in groups.items()} for space, P in proj.items()}
    rows = [{"space": space, "category": cat, "word": w, "x": repr(float(proj[space][index[w], 0])),
             "y": repr(float(proj[space][index[w], 1]))} for space in ("U", "V") for cat, ws in groups.items()
            for w in ws]
    return points, rows


def _print_summary(layer: int, meta: dict, dirs: dict, summary: dict) -> None:
    print(f"\nalignment_vis: layer {layer} of {meta.get('model')} on "
          f"{meta.get('dataset')}/{meta.get('split')} (label rank {dirs['label_rank']}"
          f"{', U padded with a null direction' if dirs['padded'] else ''})")
    for space in ("U", "V"):
        acc = summary.get(space, {}).get("joy_vs_sad_train_acc")
        sep = f"Joy-vs-Sad separability (logistic, training accuracy) {acc:.2f}" if acc is not None else \
            "no Joy/Sad categories: no boundary"
        vals = ", ".join(f"{v:.4g}" for v in dirs[f"values_{space}"])
        print(f"  {space}: top-2 eigenvalues {vals}; {sep}")


def run(argv=None) -> None:
    """``python alignment_vis.py`` and the console command ``ntps-alignment-vis``: :func:`main` behind
    :func:`ntps.cli.run` (one-line errors, exit status 2)."""
    cli.run(main, parse_args, "alignment_vis.py", argv)


if __name__ == "__main__":
    run()
