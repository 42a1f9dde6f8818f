"""llama.cpp itself runs fp4kit's GGUF files. scripts/llama_cpp.sh builds libllama from the
llama.cpp that llama-cpp-python 0.3.36 vendors (it has GGML_TYPE_NVFP4; 2026-10-01) and keeps
llama-cpp-python's ctypes bindings beside it; this test loads the GGUF of each stories260K
checkpoint with them, tokenizes text with the GGUF's own tokenizer metadata, and runs the
perplexity protocol of shared/data/README.md on the pre-tokenized TinyStories stream (windows of
CTX + 1 tokens, every position scored), exactly what `fp4kit eval` does on the same NVFP4 weights
(fp4kit's ModelOpt-format checkpoint, repacked into the GGUF without requantizing). llama.cpp's
CPU backend multiplies NVFP4 weights with activations rounded to Q8_0 and keeps K/V in F16 where
fp4kit computes in float32, so the two perplexities differ by that rounding: within 1%.
"""
import importlib
import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from conftest import REPO, run_checked, running_in_ci

CTX, WINDOWS = 256, 8
MODELS = ["stories260k-llama", "stories260k-mixtral-routed", "stories260k-qwen2moe",
          "stories260k-qwen3moe"]


@pytest.fixture(scope="module")
def llama():
    """llama-cpp-python's low-level ctypes module on the libllama scripts/llama_cpp.sh built."""
    env = os.environ.get("FP4KIT_LLAMA_CPP")
    marker = REPO / "build" / "llama-cpp-path"
    root = Path(env) if env else Path(marker.read_text().strip()) if marker.is_file() else None
    if root is None or not (root / "lib" / "libllama.so").is_file():
        msg = f"llama.cpp not built (run scripts/llama_cpp.sh or set FP4KIT_LLAMA_CPP): {root}"
        if running_in_ci():
            pytest.fail(msg)
        pytest.skip("SKIPPED: " + msg)
    os.environ["LLAMA_CPP_LIB_PATH"] = str(root / "lib")
    # The bindings module alone: the package's __init__ also imports the high-level API, whose
    # dependencies (diskcache, ...) the tests do not need.
    pkg = types.ModuleType("llama_cpp")
    pkg.__path__ = [str(root / "python" / "llama_cpp")]
    sys.modules.setdefault("llama_cpp", pkg)
    ll = importlib.import_module("llama_cpp.llama_cpp")
    ll.llama_backend_init()
    return ll


class LlamaCpp:
    def __init__(self, ll, path: Path):
        self.ll = ll
        self.model = ll.llama_model_load_from_file(str(path).encode(), ll.llama_model_default_params())
        assert self.model, f"llama.cpp could not load {path}"
        cp = ll.llama_context_default_params()
        cp.n_ctx = cp.n_batch = cp.n_ubatch = CTX
        cp.n_threads = cp.n_threads_batch = 2
        self.ctx = ll.llama_init_from_model(self.model, cp)
        assert self.ctx
        self.vocab = ll.llama_model_get_vocab(self.model)
        self.n_vocab = ll.llama_vocab_n_tokens(self.vocab)
        self.batch = ll.llama_batch_init(CTX, 0, 1)

    def tokenize(self, text: str) -> list:
        raw = text.encode()
        buf = (self.ll.llama_token * (len(raw) + 8))()
        n = self.ll.llama_tokenize(self.vocab, raw, len(raw), buf, len(buf), True, False)
        assert n >= 0
        return list(buf[:n])

    def logits(self, ids: np.ndarray) -> np.ndarray:
        """Logits (float32) at every position of `ids`, decoded as one fresh sequence."""
        ll, b = self.ll, self.batch
        ll.llama_memory_clear(ll.llama_get_memory(self.ctx), True)
        b.n_tokens = len(ids)
        for k, t in enumerate(ids):
            b.token[k], b.pos[k], b.n_seq_id[k], b.logits[k] = int(t), k, 1, 1
            b.seq_id[k][0] = 0
        assert self.ll.llama_decode(self.ctx, b) == 0
        return np.stack([np.ctypeslib.as_array(ll.llama_get_logits_ith(self.ctx, k),
                                               shape=(self.n_vocab,)).astype(np.float32)
                         for k in range(len(ids))])

    def nll(self, window: np.ndarray) -> tuple:
        """Summed -log p(window[k+1] | window[:k+1]) over k, from a fresh sequence."""
        lg = self.logits(window[:-1]).astype(np.float64)
        m = lg.max(axis=1, keepdims=True)
        logp = lg - m - np.log(np.exp(lg - m).sum(axis=1, keepdims=True))
        return -logp[np.arange(len(lg)), window[1:]].sum(), len(lg)

    def ppl(self, stream: np.ndarray, windows: int) -> float:
        """Perplexity over `windows` windows of CTX + 1 tokens of `stream`."""
        nll, count = 0.0, 0
        for i in range(windows):
            s, n = self.nll(stream[i * CTX: i * CTX + CTX + 1])
            nll, count = nll + s, count + n
        return float(np.exp(nll / count))

    def close(self):
        self.ll.llama_batch_free(self.batch)
        self.ll.llama_free(self.ctx)
        self.ll.llama_model_free(self.model)


def assert_ppl_close(label: str, theirs: float, ours: float):
    print(f"{label}: llama.cpp PPL {theirs:.4f}, fp4kit eval PPL {ours:.4f}")
    assert np.isfinite(theirs) and theirs > 1
    assert abs(theirs / ours - 1) < 0.01, (theirs, ours)


def nonzero_shared_expert_gate(src: Path, dst: Path):
    """stories260k-qwen2moe with its all-zero shared_expert_gate set to 2^-10: the same function
    (the shared expert's weights are zeros, so its gated output stays 0) but a gate logit that is
    not exactly 0, which llama.cpp's qwen2moe graph needs: it computes the sigmoid as silu(x)/x."""
    dst.mkdir()
    for f in src.iterdir():
        if f.name != "model.safetensors":
            (dst / f.name).write_bytes(f.read_bytes())
    t = load_file(src / "model.safetensors")
    for name in t:
        if name.endswith("shared_expert_gate.weight"):
            assert not t[name].any()
            t[name].fill_(2.0 ** -10)
        if ".shared_expert." in name:
            assert not t[name].any(), name
    save_file(t, dst / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize("name", MODELS)
def test_llama_cpp_runs_the_gguf_like_fp4kit_eval(fp4kit, llama, shared_data, tmp_path, name):
    src = shared_data / "models" / name
    if name == "stories260k-qwen2moe":
        nonzero_shared_expert_gate(src, tmp_path / "src")
        src = tmp_path / "src"
    nvfp4, gguf_path = tmp_path / "nvfp4", tmp_path / "m.gguf"
    run_checked([fp4kit, "quantize", src, nvfp4, "--weights-only", "--allow-destroyed"])
    run_checked([fp4kit, "quantize", nvfp4, gguf_path, "--format", "gguf"])  # lossless repack

    full = np.fromfile(shared_data / "text" / "tinystories_val.stories260k.u16", "<u2")
    stream = full[: CTX * WINDOWS + 1].astype(np.int64)
    ids = tmp_path / "ids.u16"
    stream.astype("<u2").tofile(ids)
    proc = run_checked([fp4kit, "eval", nvfp4, "--data", ids, "--ctx", CTX, "--json"])
    ours = json.loads(proc.stdout)["ppl"]["value"]

    m = LlamaCpp(llama, gguf_path)
    try:
        # The GGUF's tokenizer (SentencePiece scores from tokenizer.json's merges) gives the ids
        # of the pre-tokenized stream (llama2.c's encoder) for the first stories.
        text = (shared_data / "text" / "tinystories_val.txt").read_text().split("\n\n")
        blocks = [b.strip() for b in text if b.strip()][:20]
        got_ids = [t for b in blocks for t in m.tokenize(b)]
        assert got_ids == full[: len(got_ids)].tolist()
        theirs = m.ppl(stream, WINDOWS)
    finally:
        m.close()
    assert_ppl_close(name, theirs, ours)
