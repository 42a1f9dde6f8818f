#include "fp4kit/engine/data_source.hpp"

#include <memory>
#include <optional>

#include "fp4kit/error.hpp"
#include "fp4kit/text/tokenizer.hpp"

namespace fp4kit::engine {
namespace {

bool needs_tokenizer(const std::filesystem::path& data, const text::CalibrationOptions& o) {
  const auto f = text::resolve_format(data, o.format);
  return f == text::CalibrationFormat::Text || f == text::CalibrationFormat::Jsonl;
}

std::optional<text::Tokenizer> tokenizer_if_needed(const std::filesystem::path& data,
                                                   const std::filesystem::path& model_dir,
                                                   const text::CalibrationOptions& o) {
  if (!std::filesystem::exists(data)) throw Error(data.string() + ": data file not found");
  // A device or a pipe (/dev/zero, /dev/urandom) never ends: reading it would fill the memory.
  if (!std::filesystem::is_regular_file(data))
    throw Error(data.string() + ": not a regular file (a device or pipe would be read without "
                "end); give a text, JSONL or .u16/.u32 file");
  if (!needs_tokenizer(data, o)) return std::nullopt;
  const auto dir = std::filesystem::is_directory(model_dir) ? model_dir : model_dir.parent_path();
  if (!std::filesystem::exists(dir / "tokenizer.json"))
    throw Error(data.string() + ": text data needs the model's tokenizer, but " +
                (dir / "tokenizer.json").string() + " does not exist (use a .u16/.u32 id file)");
  return text::Tokenizer::load(dir);
}

}  // namespace

text::CalibrationSamples load_calibration_windows(const std::filesystem::path& data,
                                                  const std::filesystem::path& model_dir,
                                                  const text::CalibrationOptions& o) {
  auto tok = tokenizer_if_needed(data, model_dir, o);
  return text::load_calibration_data(data, tok ? &*tok : nullptr, o);
}

EvalWindowReader::EvalWindowReader(const std::filesystem::path& data, const std::filesystem::path& model_dir,
                                   const text::CalibrationOptions& o, size_t ctx, size_t max_windows,
                                   size_t max_tokens)
    : tokenizer_(tokenizer_if_needed(data, model_dir, o)),
      reader_(std::make_unique<text::TokenReader>(data, tokenizer_ ? &*tokenizer_ : nullptr, o)),
      ctx_(ctx),
      max_windows_(max_windows),
      tokens_left_(max_tokens ? max_tokens : SIZE_MAX) {
  if (ctx == 0) throw Error("perplexity: --ctx must be at least 1");
}

EvalWindowReader::~EvalWindowReader() = default;

bool EvalWindowReader::next(std::vector<int32_t>& w) {
  w.clear();
  if (max_windows_ && windows_ == max_windows_) return false;
  if (windows_ > 0) w.push_back(last_);
  const size_t want = std::min(windows_ > 0 ? ctx_ : ctx_ + 1, tokens_left_);
  tokens_left_ -= reader_->read(w, want);
  if (w.size() < 2) return false;
  last_ = w.back();
  ++windows_;
  return true;
}

uint64_t EvalWindowReader::forced_cuts() const { return reader_->forced_cuts(); }

}  // namespace fp4kit::engine
