// fp4kit-st-copy: drives fp4kit's io layer for the Python conformance test against the official
// safetensors library and transformers (python/tests/test_safetensors_io.py). Not a user tool.
//
//   fp4kit-st-copy copy SRC OUT [--max-shard-size BYTES]
//       Opens SRC (a checkpoint directory or one .safetensors file) with Checkpoint and writes every
//       tensor, one at a time in name order, through CheckpointWriter into OUT (atomic OutputDir),
//       with config.json, generation_config.json and the sidecar files copied. The first shard's
//       __metadata__ is kept (default {"format": "pt"}).
//   fp4kit-st-copy dump SRC DIR
//       Writes DIR/manifest.json ({"metadata": {...}, "tensors": [{"name", "dtype", "shape",
//       "shard", "file"}]}) and each tensor's raw bytes as DIR/<i>.bin, as fp4kit reads them.
// Exit codes: 0 ok, 1 fp4kit::Error (message on stderr), 2 usage.
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fp4kit/error.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/io/output_dir.hpp"
#include "fp4kit/io/safetensors_writer.hpp"

namespace fs = std::filesystem;

namespace {

int usage(const char* why) {
  std::fprintf(stderr,
               "fp4kit-st-copy: %s\nusage: fp4kit-st-copy copy SRC OUT [--max-shard-size BYTES]\n"
               "       fp4kit-st-copy dump SRC DIR\n",
               why);
  return 2;
}

void copy_checkpoint(const fs::path& src, const fs::path& out, uint64_t max_shard_bytes) {
  auto ck = fp4kit::Checkpoint::open(src);
  std::vector<fp4kit::TensorSpec> specs;
  for (const auto& name : ck->tensor_names()) {
    const auto& t = ck->info(name);
    specs.push_back({name, t.dtype, t.shape});
  }
  std::map<std::string, std::string> metadata = ck->shards().front()->metadata();
  if (metadata.empty()) metadata = {{"format", "pt"}};

  fp4kit::OutputDir dir(out, ck->dir(), /*force=*/false);
  fp4kit::CheckpointWriter writer(dir.partial(), specs, max_shard_bytes, metadata);
  for (const auto& name : ck->tensor_names()) {
    writer.write(name, ck->bytes(name));
    ck->release(name);
  }
  writer.finish();
  if (fs::is_directory(src)) {
    for (const char* f : {"config.json", "generation_config.json"})
      if (fs::is_regular_file(src / f)) fs::copy_file(src / f, dir.partial() / f);
    for (const auto& rel : ck->sidecar_files()) {
      if (fs::exists(dir.partial() / rel)) continue;
      fs::create_directories((dir.partial() / rel).parent_path());
      fs::copy_file(src / rel, dir.partial() / rel);
    }
  }
  dir.commit();
}

void dump_checkpoint(const fs::path& src, const fs::path& out) {
  auto ck = fp4kit::Checkpoint::open(src);
  fs::create_directories(out);
  nlohmann::json manifest;
  manifest["metadata"] = ck->shards().front()->metadata();
  manifest["tensors"] = nlohmann::json::array();
  size_t i = 0;
  for (const auto& name : ck->tensor_names()) {
    const auto& t = ck->info(name);
    const std::string file = std::to_string(i++) + ".bin";
    const auto bytes = ck->bytes(name);
    std::ofstream o(out / file, std::ios::binary);
    o.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    if (!o) throw fp4kit::Error("cannot write " + (out / file).string());
    manifest["tensors"].push_back({{"name", name},
                                   {"dtype", std::string(fp4kit::dtype_name(t.dtype))},
                                   {"shape", t.shape},
                                   {"shard", ck->file_of(name).path().filename().string()},
                                   {"file", file}});
  }
  std::ofstream(out / "manifest.json") << manifest.dump(1) << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) return usage("missing arguments");
  const std::string cmd = argv[1];
  try {
    if (cmd == "copy") {
      uint64_t max_shard = fp4kit::kDefaultMaxShardBytes;
      for (int i = 4; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--max-shard-size" && i + 1 < argc) max_shard = std::stoull(argv[++i]);
        else return usage(("unexpected argument " + a).c_str());
      }
      copy_checkpoint(argv[2], argv[3], max_shard);
    } else if (cmd == "dump" && argc == 4) {
      dump_checkpoint(argv[2], argv[3]);
    } else {
      return usage(("unknown command " + cmd).c_str());
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fp4kit-st-copy: error: %s\n", e.what());
    return 1;
  }
}
