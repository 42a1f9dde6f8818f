"""fp4kit's tokenizer (src/fp4kit/text) against the Hugging Face `tokenizers` library.

The C++ side runs through build/fp4kit-tokenize (tools/tokenize_main.cpp): it reads a JSON array
of strings and prints the ids of each (or the decoded text with --decode). The reference is
tokenizers.Tokenizer.from_file on the same tokenizer.json. Every string of the corpora is
compared, not a sample: all 4,300 TinyStories blocks and all 4,358 WikiText-2 test lines with
the Qwen3 tokenizer (485,486 tokens), plus edge cases; and WikiText lines with the
stories260K tokenizer (heavy byte fallback).
"""
import json
import os

import pytest

from conftest import require_executable, run_checked, running_in_ci, tool_path

try:
    import tokenizers
except ImportError:  # pragma: no cover - depends on the venv
    tokenizers = None


@pytest.fixture(scope="module")
def hf():
    if tokenizers is None:
        if running_in_ci():
            pytest.fail("the `tokenizers` package is missing from the test venv")
        pytest.skip("SKIPPED: `tokenizers` not installed")
    return tokenizers


@pytest.fixture(scope="module")
def tokenize_tool():
    bin_dir = os.environ.get("FP4KIT_BIN_DIR")
    path = tool_path("tokenize") if not bin_dir else os.path.join(bin_dir, "fp4kit-tokenize")
    from pathlib import Path

    return require_executable(Path(path))


def ours(tool, tokenizer_json, strings, tmp_path, *extra):
    src = tmp_path / "strings.json"
    src.write_text(json.dumps(strings), encoding="utf-8")
    out = run_checked([tool, tokenizer_json, "--strings", src, *extra]).stdout
    lines = out.split("\n")
    assert lines[-1] == "", "tool output must end with a newline"
    lines = lines[:-1]
    assert len(lines) == len(strings), f"{len(lines)} output lines for {len(strings)} strings"
    if "--decode" in extra:
        return [json.loads(line) for line in lines]
    return [[int(x) for x in line.split()] for line in lines]


def compare(tool, tokenizer_json, strings, tmp_path, hf, add_special=True):
    ref_tok = hf.Tokenizer.from_file(str(tokenizer_json))
    ref = [e.ids for e in ref_tok.encode_batch(strings, add_special_tokens=add_special)]
    got = ours(tool, tokenizer_json, strings, tmp_path, *([] if add_special else ["--no-special"]))
    bad = [i for i, (a, b) in enumerate(zip(got, ref)) if a != b]
    detail = "".join(f"\n  {strings[i][:80]!r}\n    ours {got[i][:24]}\n    hf   {ref[i][:24]}" for i in bad[:5])
    assert not bad, f"{len(bad)} of {len(strings)} strings differ from tokenizers {hf.__version__}:{detail}"
    return sum(len(r) for r in ref)


def blocks(path):
    """The calibration reader's documents: Python's [b.strip() for b in text.split("\\n\\n") if b.strip()]."""
    text = path.read_text(encoding="utf-8")
    return [b.strip() for b in text.split("\n\n") if b.strip()]


EDGE_CASES = [
    "", " ", "  ", "hello world", "Hello  world", "  leading", "trailing  ", "a\nb", "a\n\n\nb", "a \n b",
    "\t tab", "   multiple   spaces   ", "\r\n windows\r\nline", " " * 100 + "y", "x" * 3000,
    # emoji (with ZWJ sequences and flags), CJK, other scripts
    "emoji 😀 ok 👨‍👩‍👧‍👦 🇫🇷", "🙂" * 50, "中文分词测试，你好世界。", "日本語のテキスト", "한국어 텍스트",
    "Ωμέγα Привет мир", "naïve façade",
    # combining accents that NFC composes, and compatibility characters NFC keeps
    "e\u0301cole cafe\u0301 A\u030a", "Å vs A\u030a", "\u1e9b\u0323", "\ufb01 ligature", "\u2126 ohm",
    # digits (the Qwen regex isolates each \p{N})
    "123 4567 3.14159 1,000,000", "٣٤٥ ૩ ² ½",
    # contractions (case-insensitive group), odd case folds
    "I'm you're they've it's I'LL WE'D", "ſ and \u212a Kelvin 's 'S",
    # whitespace classes: NEL, NBSP, ideographic space, line separator, zero-width space
    "x\u0085y", "a\u0085 b", "a \u0085", "a\u00a0b", "a\u3000b", "a\u2028b", "\u200b zero width",
    # U+180E is not White_Space in Oniguruma (PCRE2's \s matches it unless rewritten)
    " \u180ex", "\u180e(x", "x\u180e y", "\u180e\u180e  \u180e",
    # special and added tokens
    "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n", "<think>\nok\n</think>",
    "<|endoftext|><|endoftext|>", "<|im_start", "<tool_call>{\"a\": 1}</tool_call>", " <|im_end|> ",
    "def f(x):\n    return x**2  # comment\n", "tab\tsep\tvalues", "\x00\x01 control", "\ufffd replacement",
]


def test_qwen3_tinystories_all_blocks(hf, tokenize_tool, shared_data, tmp_path):
    strings = blocks(shared_data / "text" / "tinystories_val.txt")
    assert len(strings) == 4300
    tokens = compare(tokenize_tool, shared_data / "tokenizers" / "qwen3" / "tokenizer.json", strings, tmp_path, hf)
    assert tokens > 150_000


def test_qwen3_wikitext_all_lines(hf, tokenize_tool, shared_data, tmp_path):
    strings = (shared_data / "text" / "wikitext2_test.txt").read_text(encoding="utf-8").split("\n")
    assert len(strings) == 4359  # 4,358 lines and the empty string after the last newline
    tokens = compare(tokenize_tool, shared_data / "tokenizers" / "qwen3" / "tokenizer.json", strings, tmp_path, hf)
    assert tokens > 250_000


def test_qwen3_edge_cases(hf, tokenize_tool, shared_data, tmp_path):
    tok = shared_data / "tokenizers" / "qwen3" / "tokenizer.json"
    compare(tokenize_tool, tok, EDGE_CASES, tmp_path, hf, add_special=True)
    compare(tokenize_tool, tok, EDGE_CASES, tmp_path, hf, add_special=False)


def test_qwen3_decode_matches(hf, tokenize_tool, shared_data, tmp_path):
    tok = shared_data / "tokenizers" / "qwen3" / "tokenizer.json"
    strings = EDGE_CASES + blocks(shared_data / "text" / "tinystories_val.txt")[::50]
    ref_tok = hf.Tokenizer.from_file(str(tok))
    ref = [ref_tok.decode(ref_tok.encode(s).ids, skip_special_tokens=False) for s in strings]
    got = ours(tokenize_tool, tok, strings, tmp_path, "--decode")
    bad = [i for i, (a, b) in enumerate(zip(got, ref)) if a != b]
    assert not bad, f"decode differs for {[strings[i][:40] for i in bad[:5]]}"


def test_text_mode_uses_the_documented_document_rule(hf, tokenize_tool, shared_data, tmp_path):
    """--text reads documents with the calibration reader; they must be Python's blank-line blocks."""
    tok = shared_data / "tokenizers" / "qwen3" / "tokenizer.json"
    text = shared_data / "text" / "tinystories_val.txt"
    ref_tok = hf.Tokenizer.from_file(str(tok))
    ref = [e.ids for e in ref_tok.encode_batch(blocks(text))]
    out = run_checked([tokenize_tool, tok, "--text", text]).stdout.split("\n")[:-1]
    assert [[int(x) for x in line.split()] for line in out] == ref


def test_stories260k_wikitext_lines_and_edge_cases(hf, tokenize_tool, shared_data, tmp_path):
    tok = shared_data / "models" / "stories260k-llama" / "tokenizer.json"
    lines = (shared_data / "text" / "wikitext2_test.txt").read_text(encoding="utf-8").split("\n")
    compare(tokenize_tool, tok, lines[:1500] + EDGE_CASES + ["<s>x</s>", "x<unk>y"], tmp_path, hf)


def test_metaspace_variant_of_stories260k(hf, tokenize_tool, shared_data, tmp_path):
    """The v5-style form of the same tokenizer (data README section 3): Metaspace pre-tokenizer
    and decoder instead of the Prepend/Replace normalizer."""
    spec = json.loads((shared_data / "models" / "stories260k-llama" / "tokenizer.json").read_text(encoding="utf-8"))
    spec["normalizer"] = None
    spec["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": False}
    spec["decoder"] = {
        "type": "Sequence",
        "decoders": [
            {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": False},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
        ],
    }
    tok = tmp_path / "metaspace.json"
    tok.write_text(json.dumps(spec), encoding="utf-8")
    strings = blocks(shared_data / "text" / "tinystories_val.txt")[::10] + EDGE_CASES + ["a<s>  b", "<s> x"]
    compare(tokenize_tool, tok, strings, tmp_path, hf)
    spec["pre_tokenizer"]["prepend_scheme"] = "first"
    spec["pre_tokenizer"]["split"] = True
    tok.write_text(json.dumps(spec), encoding="utf-8")
    compare(tokenize_tool, tok, strings, tmp_path, hf)
    ref_tok = hf.Tokenizer.from_file(str(tok))
    ref = [ref_tok.decode(ref_tok.encode(s).ids, skip_special_tokens=False) for s in strings]
    assert ours(tokenize_tool, tok, strings, tmp_path, "--decode") == ref


def test_gpt2_style_byte_level_with_roberta_specials(hf, tokenize_tool, shared_data, tmp_path):
    """A GPT-2/RoBERTa-style tokenizer trained here by `tokenizers` itself (deterministic trainer):
    ByteLevel pre-tokenizer with its own regex and add_prefix_space, an lstrip <mask> token and
    the RobertaProcessing post-processor."""
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    t = hf.Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    t.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2000, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    t.train_from_iterator(blocks(shared_data / "text" / "tinystories_val.txt")[:2000], trainer=trainer)
    t.add_special_tokens([hf.AddedToken("<mask>", lstrip=True, rstrip=False, special=True, normalized=False)])
    t.post_processor = processors.RobertaProcessing(("</s>", t.token_to_id("</s>")), ("<s>", t.token_to_id("<s>")))
    tok = tmp_path / "gpt2ish.json"
    t.save(str(tok))
    wiki = (shared_data / "text" / "wikitext2_test.txt").read_text(encoding="utf-8").split("\n")[:1000]
    strings = wiki + EDGE_CASES + ["The <mask> sat.", "a   <mask>b", "<mask>"]
    compare(tokenize_tool, tok, strings, tmp_path, hf)
    compare(tokenize_tool, tok, strings, tmp_path, hf, add_special=False)


def random_strings(count, seed):
    """Seeded random text over the character classes where tokenizers disagree when they differ:
    ASCII words and punctuation, runs of spaces/newlines/tabs, Unicode whitespace, digits of
    several scripts, Latin with combining marks (NFC), CJK, Hangul, emoji with ZWJ/variation
    selectors, apostrophe contractions, and special-token fragments."""
    import random

    rng = random.Random(seed)
    pieces = [
        "the", "The", "cat", "HELLO", "naïve", "'s", "'T", "'re", "'ll", "'D", "'ve", "'m", "n't",
        " ", "  ", "   ", "\n", "\n\n", "\r\n", "\t", " \n ", "\u00a0", "\u3000", "\u2028", "\u0085", "\u200b",
        "\u180e", "\u000b", "\u001c",
        "0", "42", "2024", "3.14", "\u0663\u0664", "\u00bd", "\u00b2", "\u2167",
        "e\u0301", "a\u0308", "A\u030a", "\u1e9b\u0323", "o\u0302\u0323", "\u0301",
        "中文", "日本語", "한국어", "\u4e00", "ｆｕｌｌ", "Привет", "Ωμέγα", "مرحبا", "שלום", "हिन्दी",
        "😀", "👨\u200d👩\u200d👧", "❤\ufe0f", "🇫🇷", "\U0001f9d1\U0001f3fd",
        ".", ",", "!!", "?!", "...", "—", "«", "»", "(", ")", "{", "}", "<", ">", "|", "/", "\\", "@#$",
        "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<|im_", "|>", "<s>", "</s>", "<unk>",
    ]
    out = []
    for _ in range(count):
        n = rng.randint(0, 40)
        out.append("".join(rng.choice(pieces) for _ in range(n)))
    return out


@pytest.mark.parametrize("rel", ["tokenizers/qwen3/tokenizer.json", "models/stories260k-llama/tokenizer.json"])
def test_random_strings(hf, tokenize_tool, shared_data, tmp_path, rel):
    strings = random_strings(3000, seed=20261126)
    compare(tokenize_tool, shared_data / rel, strings, tmp_path, hf)
    ref_tok = hf.Tokenizer.from_file(str(shared_data / rel))
    ref = [ref_tok.decode(ref_tok.encode(s).ids, skip_special_tokens=False) for s in strings[:1000]]
    assert ours(tokenize_tool, shared_data / rel, strings[:1000], tmp_path, "--decode") == ref


def test_qwen3_random_combining_sequences(hf, tokenize_tool, shared_data, tmp_path):
    """NFC on text dense with combining marks of every Unicode version: `tokenizers` normalizes with
    Unicode 9.0 tables (marks assigned later are not reordered); fp4kit must do the same."""
    import random

    rng = random.Random(11)
    marks = (list(range(0x300, 0x370)) + list(range(0x1AB0, 0x1AC0)) + list(range(0x1DC0, 0x1E00))
             + list(range(0x20D0, 0x20F0)) + [0x3099, 0x309A, 0x0E38, 0x05B0, 0x0651, 0x093C, 0x094D, 0x0F71])
    bases = (list(range(0x41, 0x5B)) + list(range(0xC0, 0x250)) + list(range(0x1100, 0x1113))
             + list(range(0x1161, 0x1176)) + list(range(0x11A8, 0x11C3)) + list(range(0xAC00, 0xAC40))
             + list(range(0x3040, 0x30FF)) + list(range(0x0391, 0x03CA)) + list(range(0x1E00, 0x1F00)) + [0x20, 0x0915])
    strings = ["".join(chr(rng.choice(bases if rng.random() < 0.5 else marks)) for _ in range(rng.randint(1, 25)))
               for _ in range(5000)]
    compare(tokenize_tool, shared_data / "tokenizers" / "qwen3" / "tokenizer.json", strings, tmp_path, hf)


def test_llama3_style_pipeline(hf, tokenize_tool, shared_data, tmp_path):
    """Llama-3's layout on Qwen3's vocabulary: no normalizer, Llama-3's split regex (digits in
    groups of up to three), and a Sequence post-processor [ByteLevel, TemplateProcessing] that
    puts a BOS in front (here <|endoftext|>, id 151643)."""
    spec = json.loads((shared_data / "tokenizers" / "qwen3" / "tokenizer.json").read_text(encoding="utf-8"))
    spec["normalizer"] = None
    spec["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    )
    bos = {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}
    spec["post_processor"] = {
        "type": "Sequence",
        "processors": [
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
            {
                "type": "TemplateProcessing",
                "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [bos, {"Sequence": {"id": "A", "type_id": 0}}, bos, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [151643], "tokens": ["<|endoftext|>"]}},
            },
        ],
    }
    tok = tmp_path / "llama3ish.json"
    tok.write_text(json.dumps(spec), encoding="utf-8")
    wiki = (shared_data / "text" / "wikitext2_test.txt").read_text(encoding="utf-8").split("\n")[:1500]
    strings = wiki + EDGE_CASES + ["1234567 12 1", "year 2024: 3.14159"]
    compare(tokenize_tool, tok, strings, tmp_path, hf)
    compare(tokenize_tool, tok, strings, tmp_path, hf, add_special=False)
