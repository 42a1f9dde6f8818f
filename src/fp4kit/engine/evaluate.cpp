#include "fp4kit/engine/evaluate.hpp"

#include <cmath>
#include <cstring>
#include <fstream>
#include <memory>

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
  uint32_t vocab = 0, ctx = 0, windows = 0;
};

// The fixed part of a base log-prob file's header; leaves `f` at the first window.
BaseFileHeader read_base_header(std::ifstream& f, const std::filesystem::path& p) {
  char magic[8];
  if (!f.read(magic, 8) || std::memcmp(magic, kMagic, 8) != 0)
    throw Error(p.string() + ": not an fp4kit base log-prob file (magic FP4KBASE missing)");
  if (get<uint32_t>(f, p) != 1) throw Error(p.string() + ": unsupported base log-prob version");
  BaseFileHeader h;
  h.vocab = get<uint32_t>(f, p);
  h.ctx = get<uint32_t>(f, p);
  h.windows = get<uint32_t>(f, p);
  return h;
}
constexpr std::streamoff kFirstWindowOffset = 8 + 4 * 4;

// One window of the header: u32 n, n i32 ids. With `ids` null the ids are skipped.
void read_base_window(std::ifstream& f, const std::filesystem::path& p, std::vector<int32_t>* ids) {
  const uint32_t len = get<uint32_t>(f, p);
  if (len < 2 || len > (1u << 24)) throw Error(p.string() + ": corrupt window length");
  if (ids == nullptr) {
    if (!f.seekg(static_cast<std::streamoff>(len) * 4, std::ios::cur))
      throw Error(p.string() + ": base log-prob file is truncated");
    return;
  }
  ids->resize(len);
  if (!f.read(reinterpret_cast<char*>(ids->data()), static_cast<std::streamsize>(len * 4)))
    throw Error(p.string() + ": base log-prob file is truncated");
}

// The first `count` windows of a base log-prob file's header, read one at a time.
WindowSource base_file_windows(const std::filesystem::path& p, uint32_t count) {
  auto f = std::make_shared<std::ifstream>(p, std::ios::binary);
  if (!*f || !f->seekg(kFirstWindowOffset)) throw Error(p.string() + ": cannot open base log-prob file");
  auto left = std::make_shared<uint32_t>(count);
  return [f, left, p](std::vector<int32_t>& w) {
    if (*left == 0) return false;
    --*left;
    read_base_window(*f, p, &w);
    return true;
  };
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

EvalResult evaluate(const Checkpoint& quant, const Checkpoint* base, const WindowSource& source,
                    const EvalOptions& o) {
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

  WindowSource windows = source;
  std::ifstream base_in;  // --base-logits: at its log-probs
  if (!o.base_logits.empty()) {
    base_in.open(o.base_logits, std::ios::binary);
    if (!base_in) throw Error(o.base_logits.string() + ": cannot open base log-prob file");
    const BaseFileHeader h = read_base_header(base_in, o.base_logits);
    if (h.vocab != vocab)
      throw Error(fmt::format("{}: saved for a vocabulary of {}, the model has {}",
                              o.base_logits.string(), h.vocab, vocab));
    for (uint32_t i = 0; i < h.windows; ++i) read_base_window(base_in, o.base_logits, nullptr);
    const uint32_t n = o.max_windows && o.max_windows < h.windows ? static_cast<uint32_t>(o.max_windows) : h.windows;
    windows = base_file_windows(o.base_logits, n);
  }
  // The first window is taken now: no window at all is an error before any file is made.
  std::optional<std::vector<int32_t>> ahead(std::in_place);
  if (!windows(*ahead)) throw Error("eval: the data gives no window of at least 2 tokens");
  const bool compare = beng.has_value() || base_in.is_open();

  std::ofstream save, dump;
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
  if (!o.save_base.empty()) {
    if (!beng) throw Error("eval: --save-base needs --base");
    save.open(o.save_base, std::ios::binary | std::ios::trunc);
    if (!save) throw Error(o.save_base.string() + ": cannot create");
    save.write(kMagic, 8);
    put<uint32_t>(save, 1);
    put<uint32_t>(save, static_cast<uint32_t>(vocab));
    put<uint32_t>(save, static_cast<uint32_t>(o.ctx));
    put<uint32_t>(save, 0);  // the window count, known once they are written
    // The header holds every window before the first log-prob: write them as they come, then
    // read them back from the file for the evaluation (memory stays one window).
    uint32_t n = 0;
    do {
      if (n == UINT32_MAX) throw Error(o.save_base.string() + ": more than 2^32 - 1 windows");
      put<uint32_t>(save, static_cast<uint32_t>(ahead->size()));
      save.write(reinterpret_cast<const char*>(ahead->data()), static_cast<std::streamsize>(ahead->size() * 4));
      ++n;
    } while (windows(*ahead));
    save.seekp(kFirstWindowOffset - 4);
    put<uint32_t>(save, n);
    save.seekp(0, std::ios::end);
    if (!save.flush()) throw Error(o.save_base.string() + ": write failed");
    windows = base_file_windows(o.save_base, n);
    if (!windows(*ahead)) throw Error(o.save_base.string() + ": windows not read back");
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

  PerplexityAccumulator qppl, bppl;
  KldAccumulator kld;
  // Groups of windows whose base log-probs fit in group_bytes, taken from the source as they go.
  size_t w0 = 0;  // index of the group's first window
  std::vector<std::vector<int32_t>> group;
  while (ahead) {
    group.clear();
    size_t rows = 0;
    while (ahead && (group.empty() || (rows + ahead->size() - 1) * vocab * 4 <= o.group_bytes)) {
      rows += ahead->size() - 1;
      group.push_back(std::move(*ahead));
      if (!windows(*ahead)) ahead.reset();
    }
    std::vector<std::vector<int32_t>> inputs;
    std::vector<size_t> row_of(group.size() + 1, 0);
    for (size_t w = 0; w < group.size(); ++w) {
      inputs.emplace_back(group[w].begin(), group[w].end() - 1);
      row_of[w + 1] = row_of[w] + group[w].size() - 1;
    }
    std::vector<float> blp;
    if (compare) {
      blp.resize(rows * vocab);
      if (beng) {
        brun(inputs, bf, [&](size_t s, const float* lg, size_t len, size_t V) {
          for (size_t p = 0; p < len; ++p) {
            float* dst = blp.data() + (row_of[s] + p) * V;
            log_softmax(lg + p * V, V, dst);
            const double nll = -static_cast<double>(dst[group[s][p + 1]]);
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
                blp[(row_of[s] + p) * vocab + static_cast<size_t>(group[s][p + 1])]);
            check_finite(nll, o.base_logits.string(), w0 + s, p);
            bppl.add(nll);
          }
      }
    }
    qrun(inputs, qf, [&](size_t s, const float* lg, size_t len, size_t V) {
      if (dump.is_open())
        dump.write(reinterpret_cast<const char*>(lg), static_cast<std::streamsize>(len * V * 4));
      for (size_t p = 0; p < len; ++p) {
        const int32_t target = group[s][p + 1];
        const double nll = token_nll(lg + p * V, V, target);
        check_finite(nll, quant.dir().string(), w0 + s, p);
        qppl.add(nll);
        if (compare) kld.add(blp.data() + (row_of[s] + p) * V, lg + p * V, V, target);
      }
    });
    w0 += group.size();
  }
  if (save.is_open() && !save.flush()) throw Error(o.save_base.string() + ": write failed");
  if (dump.is_open() && !dump.flush()) throw Error(o.dump_logits.string() + ": write failed");

  EvalResult r;
  r.windows = w0;
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

EvalResult evaluate(const Checkpoint& quant, const Checkpoint* base,
                    const std::vector<int32_t>& stream, const EvalOptions& o) {
  std::vector<std::vector<int32_t>> windows;
  if (o.base_logits.empty()) windows = ppl_windows(stream, o.ctx, o.max_windows);
  size_t next = 0;
  return evaluate(quant, base, [&](std::vector<int32_t>& w) {
    if (next == windows.size()) return false;
    w = std::move(windows[next++]);
    return true;
  }, o);
}

}  // namespace fp4kit::engine
