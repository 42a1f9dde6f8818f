// fp4kit-tokenize: prints token ids for text, for the conformance tests against Hugging Face
// `tokenizers` and for measuring tokenizer speed.
//
//   fp4kit-tokenize TOKENIZER --strings FILE.json [--no-special] [--decode]
//       FILE.json is a JSON array of strings; prints one line per string: the ids separated by
//       spaces (or, with --decode, the JSON-quoted decode(encode(string))).
//   fp4kit-tokenize TOKENIZER --text FILE [--no-special] [--bench]
//       encodes each blank-line-separated block of FILE (the calibration-data reader's rule);
//       prints ids per block, or with --bench only the count and the speed.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fp4kit/error.hpp"
#include "fp4kit/text/calibration_data.hpp"
#include "fp4kit/text/tokenizer.hpp"

namespace {

int usage() {
  std::cerr << "usage: fp4kit-tokenize TOKENIZER (--strings FILE.json | --text FILE) [--no-special] [--decode] "
               "[--bench]\n";
  return 2;
}

void print_ids(const std::vector<int32_t>& ids, std::string& buf) {
  buf.clear();
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) buf.push_back(' ');
    buf += std::to_string(ids[i]);
  }
  buf.push_back('\n');
  std::fwrite(buf.data(), 1, buf.size(), stdout);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  std::string tokenizer_path = argv[1], strings_file, text_file;
  bool add_special = true, decode = false, bench = false;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--strings" && i + 1 < argc) strings_file = argv[++i];
    else if (a == "--text" && i + 1 < argc) text_file = argv[++i];
    else if (a == "--no-special") add_special = false;
    else if (a == "--decode") decode = true;
    else if (a == "--bench") bench = true;
    else return usage();
  }
  if (strings_file.empty() == text_file.empty()) return usage();
  try {
    const auto t_load = std::chrono::steady_clock::now();
    const auto tok = fp4kit::text::Tokenizer::load(tokenizer_path);
    const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();

    std::vector<std::string> inputs;
    if (!strings_file.empty()) {
      std::ifstream in(strings_file, std::ios::binary);
      if (!in) throw fp4kit::Error(strings_file + ": cannot open file");
      std::stringstream ss;
      ss << in.rdbuf();
      const auto j = nlohmann::json::parse(ss.str());
      if (!j.is_array()) throw fp4kit::Error(strings_file + ": expected a JSON array of strings");
      for (const auto& s : j) inputs.push_back(s.get<std::string>());
    } else {
      inputs = fp4kit::text::read_text_documents(text_file);
    }

    std::string buf;
    size_t tokens = 0, bytes = 0;
    const auto t0 = std::chrono::steady_clock::now();
    for (const std::string& s : inputs) {
      const auto ids = tok.encode(s, add_special);
      tokens += ids.size();
      bytes += s.size();
      if (bench) continue;
      if (decode) {
        const std::string line = nlohmann::json(tok.decode(ids)).dump() + "\n";
        std::fwrite(line.data(), 1, line.size(), stdout);
      } else {
        print_ids(ids, buf);
      }
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (bench)
      std::printf("load %.3f s; %zu texts, %zu bytes, %zu tokens in %.3f s: %.0f tokens/s, %.2f MB/s\n", load_s,
                  inputs.size(), bytes, tokens, s, tokens / s, bytes / s / 1e6);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "fp4kit-tokenize: " << e.what() << "\n";
    return 1;
  }
}
