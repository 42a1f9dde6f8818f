#include "fp4kit/engine/evaluate.hpp"

#include <cmath>
#include <cstring>
#include <fstream>

#include <fmt/format.h>

#include "fp4kit/engine/token_windows.hpp"
#include "fp4kit/error.hpp"
#include "fp4kit/io/checkpoint.hpp"

namespace fp4kit::engine {
namespace {

constexpr char kMagic[8] = {'F', 'P', '4', 'K', 'B', 'A', 'S', 'E'};

template <class T>
void put(std::ofstream& f, T v) {
  f.write(reinterpret_cast<const char*>(&v), sizeof v);
}
template <class T>
T get(std::ifstream& f, const std::filesystem::path& p) {
  T v;
  if (!f.read(reinterpret_cast<char*>(&v), sizeof v))
    throw Error(p.string() + ": base log-prob file is truncated");
  return v;
}

struct BaseFileHeader {
  uint32_t vocab = 0, ctx = 0;
  std::vector<std::vector<int32_t>> windows;
};

BaseFileHeader read_base_header(std::ifstream& f, const std::filesystem::path& p) {
  char magic[8];
  if (!f.read(magic, 8) || std::memcmp(magic, kMagic, 8) != 0)
    throw Error(p.string() + ": not an fp4kit base log-prob file (magic FP4KBASE missing)");
  if (get<uint32_t>(f, p) != 1) throw Error(p.string() + ": unsupported base log-prob version");
  BaseFileHeader h;
  h.vocab = get<uint32_t>(f, p);
  h.ctx = get<uint32_t>(f, p);
  const uint32_t n = get<uint32_t>(f, p);
  for (uint32_t i = 0; i < n; ++i) {
    const uint32_t len = get<uint32_t>(f, p);
    if (len < 2 || len > (1u << 24)) throw Error(p.string() + ": corrupt window length");
    std::vector<int32_t> w(len);
    if (!f.read(reinterpret_cast<char*>(w.data()), static_cast<std::streamsize>(len * 4)))
      throw Error(p.string() + ": base log-prob file is truncated");
    h.windows.push_back(std::move(w));
  }
  return h;
}

// A NaN or Inf log-probability means the model computed garbage (NaN/Inf in its weights, or an
// overflow in the forward): an error naming the model and the first position, never "PPL = nan".
void check_finite(double nll, const std::string& model, size_t window, size_t position) {
  if (std::isfinite(nll)) return;
  throw Error(fmt::format(
      "{}: the log-probability of token {} in window {} is not finite ({}): the model's logits "
      "hold NaN or Inf (NaN/Inf in its weights, e.g. a norm or an embedding, or an overflow in "
      "the forward); perplexity is meaningless",
      model, position + 1, window + 1, nll));
}

}  // namespace

EvalResult evaluate(const Checkpoint& quant, const Checkpoint* base,
                    const std::vector<int32_t>& stream, const EvalOptions& o) {
  Engine qeng(quant);
  std::optional<Engine> beng;
  if (base && o.base_logits.empty()) beng.emplace(*base);
  auto runner = [&o](const Checkpoint& c, const Engine& eng) -> EvalOptions::Runner {
    if (o.make_runner) return o.make_runner(c);
    return [&eng](const std::vector<std::vector<int32_t>>& s, const ForwardOptions& f,
                  const LogitsSink& sink) { eng.run(s, f, nullptr, sink); };
  };
  const EvalOptions::Runner qrun = runner(quant, qeng);
  const EvalOptions::Runner brun = beng ? runner(*base, *beng) : EvalOptions::Runner{};
  const size_t vocab = static_cast<size_t>(qeng.spec().vocab);
  if (beng && static_cast<size_t>(beng->spec().vocab) != vocab)
    throw Error(fmt::format("eval: vocabularies differ ({} has {}, {} has {})",
                            quant.dir().string(), vocab, base->dir().string(), beng->spec().vocab));

  std::vector<std::vector<int32_t>> windows;
  std::ifstream base_in;
  if (!o.base_logits.empty()) {
    base_in.open(o.base_logits, std::ios::binary);
    if (!base_in) throw Error(o.base_logits.string() + ": cannot open base log-prob file");
    BaseFileHeader h = read_base_header(base_in, o.base_logits);
    if (h.vocab != vocab)
      throw Error(fmt::format("{}: saved for a vocabulary of {}, the model has {}",
                              o.base_logits.string(), h.vocab, vocab));
    windows = std::move(h.windows);
    if (o.max_windows && windows.size() > o.max_windows) windows.resize(o.max_windows);
  } else {
    windows = ppl_windows(stream, o.ctx, o.max_windows);
  }
  if (windows.empty()) throw Error("eval: the data gives no window of at least 2 tokens");
  const bool compare = beng.has_value() || base_in.is_open();

  std::ofstream save, dump;
  if (!o.save_base.empty()) {
    if (!beng) throw Error("eval: --save-base needs --base");
    save.open(o.save_base, std::ios::binary | std::ios::trunc);
    if (!save) throw Error(o.save_base.string() + ": cannot create");
    save.write(kMagic, 8);
    put<uint32_t>(save, 1);
    put<uint32_t>(save, static_cast<uint32_t>(vocab));
    put<uint32_t>(save, static_cast<uint32_t>(o.ctx));
    put<uint32_t>(save, static_cast<uint32_t>(windows.size()));
    for (const auto& w : windows) {
      put<uint32_t>(save, static_cast<uint32_t>(w.size()));
      save.write(reinterpret_cast<const char*>(w.data()), static_cast<std::streamsize>(w.size() * 4));
    }
  }
  if (!o.dump_logits.empty()) {
    dump.open(o.dump_logits, std::ios::binary | std::ios::trunc);
    if (!dump) throw Error(o.dump_logits.string() + ": cannot create");
  }

  ForwardOptions qf;
  qf.simulate_activations = o.simulate_activations;
  qf.chunk_tokens = o.chunk_tokens;
  ForwardOptions bf;
  bf.chunk_tokens = o.chunk_tokens;

  struct RemoveUnlessDone {
    std::ofstream& f;
    const std::filesystem::path& path;
    bool done = false;
    ~RemoveUnlessDone() {
      if (done || !f.is_open()) return;
      f.close();
      std::error_code ec;
      std::filesystem::remove(path, ec);
    }
  } save_guard{save, o.save_base}, dump_guard{dump, o.dump_logits};

  PerplexityAccumulator qppl, bppl;
  KldAccumulator kld;
  // Groups of windows whose base log-probs fit in group_bytes.
  size_t w0 = 0;
  while (w0 < windows.size()) {
    size_t w1 = w0, rows = 0;
    while (w1 < windows.size() &&
           (w1 == w0 || (rows + windows[w1].size() - 1) * vocab * 4 <= o.group_bytes)) {
      rows += windows[w1].size() - 1;
      ++w1;
    }
    std::vector<std::vector<int32_t>> inputs;
    std::vector<size_t> row_of(w1 - w0 + 1, 0);
    for (size_t w = w0; w < w1; ++w) {
      inputs.emplace_back(windows[w].begin(), windows[w].end() - 1);
      row_of[w - w0 + 1] = row_of[w - w0] + windows[w].size() - 1;
    }
    std::vector<float> blp;
    if (compare) {
      blp.resize(rows * vocab);
      if (beng) {
        brun(inputs, bf, [&](size_t s, const float* lg, size_t len, size_t V) {
          for (size_t p = 0; p < len; ++p) {
            float* dst = blp.data() + (row_of[s] + p) * V;
            log_softmax(lg + p * V, V, dst);
            const double nll = -static_cast<double>(dst[windows[w0 + s][p + 1]]);
            check_finite(nll, base->dir().string(), w0 + s, p);
            bppl.add(nll);
          }
        });
        if (save.is_open())
          save.write(reinterpret_cast<const char*>(blp.data()),
                     static_cast<std::streamsize>(blp.size() * 4));
      } else {
        if (!base_in.read(reinterpret_cast<char*>(blp.data()),
                          static_cast<std::streamsize>(blp.size() * 4)))
          throw Error(o.base_logits.string() + ": base log-prob file is truncated");
        for (size_t s = 0; s < inputs.size(); ++s)
          for (size_t p = 0; p < inputs[s].size(); ++p) {
            const double nll = -static_cast<double>(
                blp[(row_of[s] + p) * vocab + static_cast<size_t>(windows[w0 + s][p + 1])]);
            check_finite(nll, o.base_logits.string(), w0 + s, p);
            bppl.add(nll);
          }
      }
    }
    qrun(inputs, qf, [&](size_t s, const float* lg, size_t len, size_t V) {
      if (dump.is_open())
        dump.write(reinterpret_cast<const char*>(lg), static_cast<std::streamsize>(len * V * 4));
      for (size_t p = 0; p < len; ++p) {
        const int32_t target = windows[w0 + s][p + 1];
        const double nll = token_nll(lg + p * V, V, target);
        check_finite(nll, quant.dir().string(), w0 + s, p);
        qppl.add(nll);
        if (compare) kld.add(blp.data() + (row_of[s] + p) * V, lg + p * V, V, target);
      }
    });
    w0 = w1;
  }
  if (save.is_open() && !save.flush()) throw Error(o.save_base.string() + ": write failed");
  if (dump.is_open() && !dump.flush()) throw Error(o.dump_logits.string() + ": write failed");

  EvalResult r;
  r.windows = windows.size();
  r.quant = qppl.result();
  if (compare) {
    r.base = bppl.result();
    r.kld = kld.summary();
  }
  // Finite log-probabilities can still give exp(mean NLL) beyond the double range.
  for (const auto* res : {&r.quant, r.base ? &*r.base : nullptr})
    if (res && !std::isfinite(res->ppl))
      throw Error(fmt::format("{}: perplexity exp({}) is not finite (the mean negative "
                              "log-likelihood is beyond the double range)",
                              res == &r.quant ? quant.dir().string() : "base", res->mean_nll));
  save_guard.done = dump_guard.done = true;
  return r;
}

}  // namespace fp4kit::engine
