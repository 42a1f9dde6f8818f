#include "fp4kit/engine/token_windows.hpp"

#include <fstream>
#include <limits>

#include "fp4kit/error.hpp"

namespace fp4kit::engine {

std::vector<int32_t> read_token_ids(const std::filesystem::path& path) {
  const std::string ext = path.extension().string();
  size_t width = 0;
  if (ext == ".u16") width = 2;
  else if (ext == ".u32") width = 4;
  else throw Error(path.string() + ": token id files must end in .u16 or .u32");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path.string() + ": cannot open token id file");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.size() % width != 0)
    throw Error(path.string() + ": size " + std::to_string(bytes.size()) +
                " is not a multiple of " + std::to_string(width) + " bytes");
  std::vector<int32_t> ids(bytes.size() / width);
  for (size_t i = 0; i < ids.size(); ++i) {
    uint32_t v = 0;
    for (size_t b = 0; b < width; ++b) v |= static_cast<uint32_t>(bytes[i * width + b]) << (8 * b);
    if (v > static_cast<uint32_t>(std::numeric_limits<int32_t>::max()))
      throw Error(path.string() + ": token id " + std::to_string(v) + " at index " +
                  std::to_string(i) + " is too large");
    ids[i] = static_cast<int32_t>(v);
  }
  return ids;
}

std::vector<std::vector<int32_t>> ppl_windows(const std::vector<int32_t>& stream, size_t ctx,
                                              size_t max_windows) {
  if (ctx == 0) throw Error("perplexity: --ctx must be at least 1");
  std::vector<std::vector<int32_t>> out;
  for (size_t start = 0; start + 1 < stream.size(); start += ctx) {
    if (max_windows && out.size() >= max_windows) break;
    const size_t end = std::min(stream.size(), start + ctx + 1);
    out.emplace_back(stream.begin() + static_cast<ptrdiff_t>(start),
                     stream.begin() + static_cast<ptrdiff_t>(end));
  }
  return out;
}

}  // namespace fp4kit::engine
