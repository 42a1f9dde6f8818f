// Tokenizer speed on real text: encode every blank-line block of shared/data's TinyStories and
// WikiText-2 test with the Qwen3 tokenizer (byte-level BPE, 151k merges) and the stories260K
// tokenizer (SentencePiece-style BPE), one thread; plus the time to load Qwen3's 11 MB
// tokenizer.json.
//   build-text/bench/bench_tokenizer --benchmark_counters_tabular=true
// Counters: tokens_per_s, MB_per_s (input bytes). The BPE word cache is warm after the first
// iteration, as it is in a calibration run after the first few documents.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>

#include "fp4kit/text/calibration_data.hpp"
#include "fp4kit/text/tokenizer.hpp"

namespace {

using fp4kit::text::Tokenizer;

std::filesystem::path shared_data() {
  if (const char* env = std::getenv("FP4KIT_SHARED_DATA")) return env;
  // bench/ is one level below the repository root; shared/ sits beside the repository.
  return std::filesystem::path(__FILE__).parent_path().parent_path() / ".." / "shared" / "data";
}

void encode_corpus(benchmark::State& state, const char* tokenizer_rel, const char* text_rel) {
  const auto tok_path = shared_data() / tokenizer_rel, text_path = shared_data() / text_rel;
  if (!std::filesystem::exists(tok_path) || !std::filesystem::exists(text_path)) {
    state.SkipWithError("shared data not found (set FP4KIT_SHARED_DATA)");
    return;
  }
  const Tokenizer tok = Tokenizer::load(tok_path);
  const auto docs = fp4kit::text::read_text_documents(text_path);
  size_t tokens = 0, bytes = 0;
  for (auto _ : state) {
    for (const auto& d : docs) {
      tokens += tok.encode(d).size();
      bytes += d.size();
    }
  }
  state.counters["tokens_per_s"] = benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsRate);
  state.counters["MB_per_s"] = benchmark::Counter(static_cast<double>(bytes) / 1e6, benchmark::Counter::kIsRate);
}

void BM_Qwen3_TinyStories(benchmark::State& s) { encode_corpus(s, "tokenizers/qwen3", "text/tinystories_val.txt"); }
void BM_Qwen3_WikiText2(benchmark::State& s) { encode_corpus(s, "tokenizers/qwen3", "text/wikitext2_test.txt"); }
void BM_Stories260k_TinyStories(benchmark::State& s) {
  encode_corpus(s, "models/stories260k-llama", "text/tinystories_val.txt");
}

void BM_Qwen3_Load(benchmark::State& state) {
  const auto path = shared_data() / "tokenizers/qwen3";
  if (!std::filesystem::exists(path)) {
    state.SkipWithError("shared data not found (set FP4KIT_SHARED_DATA)");
    return;
  }
  for (auto _ : state) benchmark::DoNotOptimize(Tokenizer::load(path).vocab_size());
}

}  // namespace

BENCHMARK(BM_Qwen3_TinyStories)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Qwen3_WikiText2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Stories260k_TinyStories)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Qwen3_Load)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);

BENCHMARK_MAIN();
