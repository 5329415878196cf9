"""ntps.models: loading by key / directory / hub id, quirks, LoRA merge, the offline registry.

Fast tier: tiny random Llama / Qwen2 / GPT-2 / Phi-3 models built from configs (2 layers, width 32)
and tokenizers made in memory; nothing is downloaded. The ``slow`` tests use the real offline models
(``smollm2-135m`` ...) only where ``python -m ntps.models fetch KEY`` has already built them.
"""

from __future__ import annotations

import hashlib
import json
import random
import zipfile

import pytest
import torch

pytest.importorskip("transformers")

from transformers import LlamaForCausalLM, LlamaModel  # noqa: E402

import ntps.models as nm  # noqa: E402
from ntps import gguf, hub  # noqa: E402
from ntps.fetch import FetchError  # noqa: E402


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("NTPS_HOME", str(tmp_path / "ntps_home"))
    return tmp_path / "ntps_home"


# --- loading a local directory ------------------------------------------------------------------


@pytest.mark.parametrize("kind,arch,pad", [("llama", "LlamaForCausalLM", ("</s>", "eos")),
                                            ("qwen2", "Qwen2ForCausalLM", ("<|endoftext|>", "tokenizer"))])
def test_load_local_dir(model_dirs, kind, arch, pad):
    model, tok, info = nm.load_model_and_tokenizer(str(model_dirs[kind]))
    assert info["source"] == "local" and info["model"] == str(model_dirs[kind])
    assert info["architecture"] == arch
    assert (info["num_hidden_layers"], info["hidden_size"], info["n_states"]) == (2, 32, 3)
    assert info["dtype"] == "float32" and info["device"] == "cpu" and info["revision"] is None
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    # Llama: pad falls back to eos; Qwen2Tokenizer brings its own; padding on the right
    assert (tok.pad_token, info["pad_source"]) == pad
    assert tok.padding_side == "right"
    short = tok("a dog")["input_ids"]
    batch = tok(["the cat sat on the mat the big dog", "a dog"], padding=True, return_tensors="pt")
    width, n = batch["input_ids"].shape[1], len(short)
    assert width > n
    assert batch["attention_mask"][1].tolist() == [1] * n + [0] * (width - n)
    assert batch["input_ids"][1].tolist() == short + [tok.pad_token_id] * (width - n)
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    assert len(out.hidden_states) == info["n_states"]
    json.dumps(info)  # metadata must be JSON-serialisable


def test_dtype_handling(model_dirs):
    model, _, info = nm.load_model_and_tokenizer(str(model_dirs["llama"]), dtype="bfloat16")
    assert info["dtype"] == "bfloat16"
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert nm.resolve_dtype("auto", "cpu") == torch.float32
    assert nm.resolve_dtype("float16") == torch.float16
    assert nm.resolve_dtype(torch.bfloat16) == torch.bfloat16
    with pytest.raises(ValueError, match="dtype must be one of"):
        nm.resolve_dtype("fp8")


def test_cuda_requested_without_cuda(model_dirs):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ValueError, match="CUDA is not available"):
        nm.load_model_and_tokenizer(str(model_dirs["llama"]), device="cuda")


@pytest.mark.parametrize("eos,unk,expected", [(False, True, "unk"), (False, False, "added")])
def test_pad_fallback(model_dirs, tmp_path, eos, unk, expected, make_tokenizer):
    tok_dir = tmp_path / "tok"
    make_tokenizer(eos=eos, unk=unk).save_pretrained(tok_dir)  # tokenizer-only folder
    model, tok, info = nm.load_model_and_tokenizer(str(model_dirs["llama"]), tokenizer_name=str(tok_dir))
    assert info["pad_source"] == expected and info["tokenizer"] == str(tok_dir)
    assert tok.pad_token == ("<unk>" if expected == "unk" else "<pad>")
    assert model.get_input_embeddings().weight.shape[0] >= len(tok)
    assert model.config.pad_token_id == tok.pad_token_id
    batch = tok(["the cat sat", "a"], padding=True, return_tensors="pt")
    assert batch["input_ids"][1, 1:].tolist() == [tok.pad_token_id] * 2
    with torch.no_grad():  # the (possibly new) pad id must be a valid embedding row
        assert torch.isfinite(model(**batch).logits).all()


# --- dimensions from the config ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["llama", "qwen2", "gpt2", "phi3"])
def test_model_dims_matches_forward(kind, tiny_model):
    model = tiny_model(kind)
    with torch.no_grad():
        out = model(torch.tensor([[3, 4, 5, 6]]), output_hidden_states=True)
    n_states, d = nm.model_dims(model.config)
    assert n_states == len(out.hidden_states) == 3
    assert d == out.hidden_states[0].shape[-1] == 32
    assert nm.model_dims(model) == (n_states, d)


def test_model_dims_nested_and_openelm_configs():
    from transformers import Gemma3Config, PretrainedConfig

    gemma = Gemma3Config(text_config={"num_hidden_layers": 5, "hidden_size": 48, "vocab_size": 100})
    assert nm.model_dims(gemma) == (6, 48)
    openelm = PretrainedConfig(num_transformer_layers=16, model_dim=1280)  # OpenELM's names
    assert nm.model_dims(openelm) == (17, 1280)
    with pytest.raises(ValueError, match="number of layers"):
        nm.model_dims(PretrainedConfig())


# --- LoRA ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,expected", [("llama", ["q_proj", "k_proj", "v_proj"]),
                                           ("qwen2", ["q_proj", "k_proj", "v_proj"]),
                                           ("gpt2", ["c_attn"]), ("phi3", ["qkv_proj"])])
def test_lora_target_modules(kind, expected, tiny_model):
    assert nm.lora_target_modules(tiny_model(kind)) == expected


def test_lora_target_modules_none_found():
    with pytest.raises(ValueError, match="no attention q/k/v projection.*fc1"):
        nm.lora_target_modules(torch.nn.Sequential(torch.nn.ModuleDict({"fc1": torch.nn.Linear(3, 3)})))


def _lora_config(model):
    from peft import LoraConfig

    # init_lora_weights=False: B random, so the adapter changes the outputs before any training
    return LoraConfig(r=4, lora_alpha=8, target_modules=nm.lora_target_modules(model),
                      init_lora_weights=False)


def test_lora_ckpt_merge_equals_peft(model_dirs, tmp_path):
    from peft import get_peft_model

    ids = torch.tensor([[3, 4, 5, 6, 7]])
    base = LlamaForCausalLM.from_pretrained(model_dirs["llama"]).eval()
    with torch.no_grad():
        base_logits = base(ids).logits
    torch.manual_seed(1)
    peft_model = get_peft_model(base, _lora_config(base)).eval()
    with torch.no_grad():
        peft_logits = peft_model(ids).logits
    peft_model.save_pretrained(tmp_path / "adapter")

    model, _, info = nm.load_model_and_tokenizer(str(model_dirs["llama"]), lora_ckpt=tmp_path / "adapter")
    assert info["lora_ckpt"] == str(tmp_path / "adapter")
    assert not any("lora" in n for n, _ in model.named_modules())  # merged and unloaded
    with torch.no_grad():
        merged_logits = model(ids).logits
    assert not torch.allclose(merged_logits, base_logits, atol=1e-3)
    torch.testing.assert_close(merged_logits, peft_logits, atol=1e-5, rtol=1e-4)


def test_lora_ckpt_trained_on_headless_model(model_dirs, tmp_path):
    """An adapter saved from PEFT on AutoModel (no LM head: other key prefix) still merges."""
    from peft import get_peft_model

    ids = torch.tensor([[3, 4, 5]])
    headless = LlamaModel.from_pretrained(model_dirs["llama"]).eval()
    torch.manual_seed(2)
    peft_model = get_peft_model(headless, _lora_config(headless)).eval()
    with torch.no_grad():
        expected = peft_model(ids).last_hidden_state
    peft_model.save_pretrained(tmp_path / "adapter")
    model, _, _ = nm.load_model_and_tokenizer(str(model_dirs["llama"]), lora_ckpt=tmp_path / "adapter")
    assert not any("lora" in n for n, _ in model.named_modules())
    with torch.no_grad():
        got = model(ids, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_lora_ckpt_not_an_adapter(model_dirs, tmp_path):
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        nm.load_model_and_tokenizer(str(model_dirs["llama"]), lora_ckpt=tmp_path)


# --- names that cannot be loaded ----------------------------------------------------------------


def test_hub_id_offline_gives_clear_error(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(nm.ModelNotAvailableError) as err:
        nm.load_model_and_tokenizer("ntps-test-org/no-such-model-xyz")
    msg = str(err.value)
    assert "'ntps-test-org/no-such-model-xyz' is not available offline" in msg
    assert "smollm2-135m" in msg and "local model directory" in msg and "HF_HUB_OFFLINE=0" in msg


def test_hub_unreachable_fails_fast(monkeypatch):
    """Without HF_HUB_OFFLINE but no route to the hub: the same error, without minutes of retries."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "offline_mode", lambda: False)
    monkeypatch.setattr(hub, "reachable", lambda timeout=3.0: False)
    with pytest.raises(nm.ModelNotAvailableError, match="not available offline"):
        nm.load_model_and_tokenizer("ntps-test-org/no-such-model-xyz")


def test_openelm_needs_trust_remote_code(tmp_path):
    with pytest.raises(ValueError, match="--trust_remote_code"):
        nm.load_model_and_tokenizer("apple/OpenELM-270M")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "openelm"}))  # a local copy
    with pytest.raises(ValueError, match="--trust_remote_code"):
        nm.load_model_and_tokenizer(str(tmp_path))


def test_missing_local_paths():
    with pytest.raises(FileNotFoundError, match="no such model file"):
        nm.load_model_and_tokenizer("./does/not/exist")
    with pytest.raises(FileNotFoundError, match="no such model file"):
        nm.load_model_and_tokenizer("missing-model.gguf")


def test_unknown_offline_key_suggests(home):
    with pytest.raises(KeyError, match="Did you mean smollm2-135m"):
        nm.ensure_offline_model("smollm2")


# --- offline registry: assembly, checksum, atomic build (no downloads) ------------------------------


def _fake_wheels(tmp_path, payloads):
    """One zip ("wheel") per part, member ``fake_pN/data/part0N``; returns specs, members, paths."""
    specs, members, wheels = [], [], {}
    for n, payload in enumerate(payloads, 1):
        spec, member = f"fake-p{n}==1.0", f"fake_p{n}/data/part0{n}"
        wheel = tmp_path / f"fake_p{n}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(member, payload)
        specs.append(spec)
        members.append(member)
        wheels[spec] = wheel
    return tuple(specs), tuple(members), wheels


def _fake_entry(specs, members, sha):
    return nm.OfflineModel(key="fake-model", upstream="example/fake", architecture="llama", licence="MIT",
                           packages=specs, members=members, gguf_name="fake.gguf", sha256=sha,
                           num_hidden_layers=2, hidden_size=32, download_mb=0, adds_bos=False)


def test_sha_mismatch_is_a_clear_error(home, tmp_path, monkeypatch):
    specs, members, wheels = _fake_wheels(tmp_path, [b"GGUF-part-one", b"-part-two"])
    monkeypatch.setitem(nm.OFFLINE_MODELS, "fake-model", _fake_entry(specs, members, "0" * 64))
    monkeypatch.setattr(gguf, "pip_download", lambda spec, **kw: wheels[spec])
    actual = hashlib.sha256(b"GGUF-part-one-part-two").hexdigest()
    with pytest.raises(FetchError) as err:
        nm.ensure_offline_model("fake-model")
    msg = str(err.value)
    assert "sha256 mismatch for fake.gguf" in msg and "0" * 64 in msg and actual in msg
    models_dir = home / "models"
    assert not (models_dir / "fake-model").exists()
    assert not list(models_dir.glob(".fake-model.*.partial"))  # no half-built directory left


def test_assembly_order_and_atomic_build(home, tmp_path, monkeypatch):
    payloads = [b"first|", b"second|", b"third"]
    specs, members, wheels = _fake_wheels(tmp_path, payloads)
    sha = hashlib.sha256(b"".join(payloads)).hexdigest()
    monkeypatch.setitem(nm.OFFLINE_MODELS, "fake-model", _fake_entry(specs, members, sha))
    monkeypatch.setattr(gguf, "pip_download", lambda spec, **kw: wheels[spec])
    seen = {}

    def fake_convert(gguf, out_dir, spec):  # stands in for the transformers de-quantisation
        seen["gguf"] = gguf.read_bytes()
        seen["out_parent"] = out_dir.parent
        out_dir.mkdir()
        (out_dir / "config.json").write_text("{}")
        return {"num_hidden_layers": 2, "hidden_size": 32}

    monkeypatch.setattr(gguf, "convert_gguf", fake_convert)
    path = nm.ensure_offline_model("fake-model")
    assert seen["gguf"] == b"first|second|third"
    assert seen["out_parent"].name.endswith(".partial")  # built in a staging folder, then renamed
    assert path == home / "models" / "fake-model"
    src = json.loads((path / "ntps_source.json").read_text())
    assert src["gguf_sha256"] == sha and src["upstream"] == "example/fake" and src["licence"] == "MIT"
    assert [p["package"] for p in src["parts"]] == list(specs)
    assert not list(path.glob("*.gguf")) and not list((home / "models").glob("*.partial"))
    # second call: no download, no conversion
    monkeypatch.setattr(gguf, "pip_download", lambda *a, **k: pytest.fail("downloaded again"))
    monkeypatch.setattr(gguf, "convert_gguf", lambda *a, **k: pytest.fail("converted again"))
    assert nm.ensure_offline_model("fake-model") == path
    assert any(r["key"] == "fake-model" and r["cached"] for r in nm.list_offline_models())


def test_force_rebuild_and_prune_downloads(home, monkeypatch):
    downloads = home / "downloads"
    downloads.mkdir(parents=True)
    specs, members, wheels = _fake_wheels(downloads, [b"abc", b"def"])
    monkeypatch.setitem(nm.OFFLINE_MODELS, "fake-model",
                        _fake_entry(specs, members, hashlib.sha256(b"abcdef").hexdigest()))
    monkeypatch.setattr(gguf, "pip_download", lambda spec, **kw: wheels[spec])
    builds = []

    def fake_convert(gguf, out_dir, spec):
        builds.append(1)
        out_dir.mkdir()
        (out_dir / "config.json").write_text(json.dumps({"build": len(builds)}))
        return {}

    monkeypatch.setattr(gguf, "convert_gguf", fake_convert)
    path = nm.ensure_offline_model("fake-model")
    assert all(w.exists() for w in wheels.values())  # wheels stay cached by default
    assert nm.ensure_offline_model("fake-model", force=True, prune_downloads=True) == path
    assert json.loads((path / "config.json").read_text()) == {"build": 2}
    assert not any(w.exists() for w in wheels.values())
    assert not list((home / "models").glob("*.partial"))


def test_build_waits_for_the_file_lock(home, tmp_path, monkeypatch):
    """A second process building the same key waits on ``$NTPS_HOME/models/.<key>.lock`` (filelock)."""
    import threading

    from filelock import FileLock

    specs, members, wheels = _fake_wheels(tmp_path, [b"xyz"])
    entry = _fake_entry(specs, members, hashlib.sha256(b"xyz").hexdigest())
    monkeypatch.setitem(nm.OFFLINE_MODELS, "fake-model", entry)
    monkeypatch.setattr(gguf, "pip_download", lambda spec, **kw: wheels[spec])
    built = []

    def fake_convert(gguf_path, out_dir, spec):
        built.append(1)
        out_dir.mkdir()
        (out_dir / "config.json").write_text("{}")
        return {}

    monkeypatch.setattr(gguf, "convert_gguf", fake_convert)
    (home / "models").mkdir(parents=True)
    lock = FileLock(home / "models" / ".fake-model.lock")
    with lock:
        worker = threading.Thread(target=nm.ensure_offline_model, args=("fake-model",))
        worker.start()
        worker.join(0.5)
        assert worker.is_alive() and not built  # blocked while another holder has the lock
    worker.join(10)
    assert not worker.is_alive() and built == [1] and (home / "models" / "fake-model" / "config.json").is_file()


def test_hub_error_translator():
    from huggingface_hub.errors import GatedRepoError

    class Boom(Exception):
        pass

    def err(exc, **kw):
        return hub.hub_error(exc, "org/x", what="dataset", way_out="WAY OUT", error=Boom, **kw)

    exc = GatedRepoError.__new__(GatedRepoError)  # its __init__ wants an HTTP response
    Exception.__init__(exc, "403 Client Error")
    gated = err(exc)
    assert isinstance(gated, Boom) and "dataset 'org/x' is gated" in str(gated) and "WAY OUT" in str(gated)
    assert "not available offline" in str(err(ConnectionError("Couldn't reach the Hub")))
    assert "not available offline" in str(err(OSError("boom"), local_only=True))
    assert "neither a local path nor a repository" in str(err(OSError("is not a valid model identifier")))
    other = str(err(ValueError("bad config")))
    assert other.startswith("could not load dataset 'org/x'") and "(original error: ValueError: bad config)" in other


def test_cli_unknown_key_is_a_one_line_error(home, capsys):
    assert nm.main(nm.parse_args(["fetch", "smollm2"])) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown offline model 'smollm2'") and "smollm2-135m" in err


def test_registry_entries_are_consistent():
    for key, m in nm.OFFLINE_MODELS.items():
        assert key == m.key and len(m.packages) == len(m.members) >= 1
        assert all("==" in p for p in m.packages)
        assert len(m.sha256) == 64 and int(m.sha256, 16) >= 0


def test_cli_list(home, capsys):
    assert nm.main(nm.parse_args(["list"])) == 0
    out = capsys.readouterr().out
    assert all(key in out for key in ("smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b"))


# --- the real model (slow; only if already built) ------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("key", list(nm.OFFLINE_MODELS))
def test_real_offline_model_if_built(key):
    """smollm2-135m (and the others, if built): finite states, real text far likelier than shuffled."""
    if not (nm.offline_model_dir(key) / "ntps_source.json").is_file():
        pytest.skip(f"run `python -m ntps.models fetch {key}` first")
    spec = nm.OFFLINE_MODELS[key]
    model, tok, info = nm.load_model_and_tokenizer(key)
    assert info["source"] == "offline-key" and info["upstream"] == spec.upstream
    assert (info["n_states"], info["hidden_size"]) == (spec.num_hidden_layers + 1, spec.hidden_size)
    assert info["adds_bos"] == spec.adds_bos and tok.padding_side == "right"
    text = ("The old man walked slowly along the beach, watching the waves roll in while the sun "
            "set behind the hills and the children played in the sand.")
    words = text.split()
    shuffled = " ".join(random.Random(0).sample(words, len(words)))

    def ppl(s):
        enc = tok(s, return_tensors="pt")
        with torch.no_grad():
            out = model(**enc, labels=enc["input_ids"], output_hidden_states=True)
        assert len(out.hidden_states) == info["n_states"]
        assert all(torch.isfinite(h).all() for h in out.hidden_states)
        return out.loss.exp().item()

    real, fake = ppl(text), ppl(shuffled)
    assert real * 10 < fake, (real, fake)
