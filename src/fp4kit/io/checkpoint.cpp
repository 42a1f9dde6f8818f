#include "fp4kit/io/checkpoint.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include "fp4kit/error.hpp"
#include "fp4kit/io/json_strict.hpp"
#include "fp4kit/io/path_identity.hpp"
#include "fp4kit/io/safetensors_index.hpp"

namespace fp4kit {

namespace fs = std::filesystem;

namespace {

std::string read_text_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw Error(fmt::format("{}: cannot open", p.string()));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw Error(fmt::format("{}: read error", p.string()));
  return ss.str();
}

// config files are parsed like transformers parses them (Python's json keeps the last of two
// equal keys), so a quirky but loadable config is not refused; it must be a JSON object.
nlohmann::json read_json_object(const fs::path& p) {
  const nlohmann::json j = parse_json_bounded(read_text_file(p), p.string());
  if (!j.is_object()) throw Error(fmt::format("{}: not a JSON object", p.string()));
  return j;
}

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
bool starts_with(const std::string& s, std::string_view prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

// Weight files in any format: an output carries its own weights, never the source's.
bool is_weight_file(const std::string& name) {
  static const char* const kSuffixes[] = {".safetensors", ".safetensors.index.json",
                                          ".bin.index.json", ".pt", ".pth", ".ckpt",
                                          ".h5", ".msgpack", ".gguf"};
  for (const char* s : kSuffixes)
    if (ends_with(name, s)) return true;
  return starts_with(name, "pytorch_model") && ends_with(name, ".bin");
}

// Where a symbolic link of the checkpoint may lead: inside the checkpoint, or, for a Hugging Face
// cache snapshot (<repo>/snapshots/<rev>/), into that repository's blobs/.
bool link_target_allowed(const fs::path& link, const fs::path& dir) {
  std::error_code ec;
  const fs::path target = fs::canonical(link, ec);
  if (ec) return false;
  const fs::path root = fs::canonical(dir, ec);
  if (ec) return false;
  if (is_within(target, root)) return true;
  return root.parent_path().filename() == "snapshots" &&
         is_within(target, root.parent_path().parent_path() / "blobs");
}

std::vector<fs::path> discover_sidecars(const fs::path& dir, std::vector<std::string>& warnings) {
  std::vector<fs::path> out;
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec);
  if (ec) throw Error(fmt::format("{}: cannot list: {}", dir.string(), ec.message()));
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) throw Error(fmt::format("{}: cannot list: {}", dir.string(), ec.message()));
    const std::string name = it->path().filename().string();
    // Hidden directories are tool state (.git, .cache/huggingface), not part of the model.
    if (it->is_directory(ec)) {
      if (starts_with(name, ".")) it.disable_recursion_pending();
      continue;
    }
    // is_regular_file follows symlinks: Hugging Face cache snapshots are links into blobs/.
    if (!it->is_regular_file(ec)) continue;
    const fs::path rel = it->path().lexically_relative(dir);
    const bool top = rel.parent_path().empty();
    if (is_weight_file(name)) continue;
    if (top && name == "config.json") continue;
    // A link that leads out of the checkpoint would copy an unrelated file into OUT.
    if (it->is_symlink(ec) && !link_target_allowed(it->path(), dir)) {
      warnings.push_back(fmt::format("{}: a symbolic link to {}, outside the checkpoint: not "
                                     "copied to the output (only files inside the checkpoint "
                                     "are)",
                                     it->path().string(),
                                     fs::weakly_canonical(it->path(), ec).string()));
      continue;
    }
    out.push_back(rel);
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

std::unique_ptr<Checkpoint> Checkpoint::open(const fs::path& path) {
  std::unique_ptr<Checkpoint> ck(new Checkpoint());
  std::error_code ec;
  if (!fs::exists(path, ec)) throw Error(fmt::format("{}: does not exist", path.string()));

  // A single file: just its tensors (no config, no sidecars).
  if (!fs::is_directory(path, ec)) {
    ck->dir_ = path.parent_path();
    ck->shards_.push_back(SafetensorsFile::open(path));
  } else {
    ck->dir_ = path;
    std::set<std::string> safetensors_files, index_files;
    for (const auto& e : fs::directory_iterator(path, ec)) {
      const std::string name = e.path().filename().string();
      if (!e.is_regular_file(ec)) continue;
      if (ends_with(name, ".safetensors")) safetensors_files.insert(name);
      if (ends_with(name, ".safetensors.index.json")) index_files.insert(name);
    }
    if (ec) throw Error(fmt::format("{}: cannot list: {}", path.string(), ec.message()));

    // Same preference as transformers: model.safetensors, then the index.
    std::string index_name;
    if (safetensors_files.count("model.safetensors")) {
      ck->shards_.push_back(SafetensorsFile::open(path / "model.safetensors"));
    } else if (index_files.count("model.safetensors.index.json")) {
      index_name = "model.safetensors.index.json";
    } else if (index_files.size() == 1) {
      index_name = *index_files.begin();
    } else if (index_files.size() > 1) {
      throw Error(fmt::format("{}: several *.safetensors.index.json files and no "
                              "model.safetensors.index.json: which one is the model?",
                              path.string()));
    } else if (safetensors_files.size() == 1) {
      ck->shards_.push_back(SafetensorsFile::open(path / *safetensors_files.begin()));
    } else if (safetensors_files.empty()) {
      throw Error(fmt::format("{}: no model.safetensors, no model.safetensors.index.json and no "
                              "*.safetensors file",
                              path.string()));
    } else {
      throw Error(fmt::format("{}: {} *.safetensors files but no model.safetensors.index.json "
                              "saying how they form one model",
                              path.string(), safetensors_files.size()));
    }

    if (!index_name.empty()) {
      const fs::path index_path = path / index_name;
      const std::string label = index_path.string();
      SafetensorsIndex index =
          parse_safetensors_index(read_text_file(index_path), safetensors_files, label);
      std::map<std::string, size_t> shard_slot;
      for (const auto& [tensor, shard] : index.weight_map) {
        if (shard_slot.count(shard)) continue;
        shard_slot[shard] = ck->shards_.size();
        ck->shards_.push_back(SafetensorsFile::open(path / shard));
      }
      // Both directions: every indexed tensor is in its shard, every tensor of a shard is in the
      // index under that shard (a tensor in two shards is caught here).
      for (const auto& [tensor, shard] : index.weight_map)
        if (!ck->shards_[shard_slot[shard]]->find(tensor))
          throw Error(fmt::format("{}: tensor \"{}\" is listed in shard \"{}\", which has no such "
                                  "tensor",
                                  label, tensor, shard));
      // A *.safetensors file the index does not reference is not part of the model: an error
      // when it holds a tensor the index maps elsewhere (which one is meant?), else a warning.
      for (const std::string& f : safetensors_files) {
        if (shard_slot.count(f)) continue;
        const auto other = SafetensorsFile::open(path / f);
        for (const auto& t : other->tensors()) {
          auto it = index.weight_map.find(t.name);
          if (it != index.weight_map.end())
            throw Error(fmt::format("{}: \"{}\" is not referenced by the index but holds tensor "
                                    "\"{}\", which the index maps to \"{}\": which one is the "
                                    "model's? Remove or rename the stray file",
                                    label, f, t.name, it->second));
        }
        ck->warnings_.push_back(fmt::format("{}: {} is not referenced by the index: ignored",
                                            label, (path / f).string()));
      }
      uint64_t shard_bytes = 0;
      for (const auto& [shard, slot] : shard_slot)
        for (const auto& t : ck->shards_[slot]->tensors()) shard_bytes += t.nbytes();
      if (auto ts = index.metadata.find("total_size");
          ts != index.metadata.end() && ts->is_number() &&
          !(ts->is_number_unsigned() && ts->get<uint64_t>() == shard_bytes))
        ck->warnings_.push_back(fmt::format("{}: metadata total_size {} disagrees with the {} "
                                            "bytes of tensor data in its shards",
                                            label, ts->dump(), shard_bytes));
      for (const auto& [shard, slot] : shard_slot)
        for (const auto& t : ck->shards_[slot]->tensors()) {
          auto it = index.weight_map.find(t.name);
          if (it == index.weight_map.end())
            throw Error(fmt::format("{}: tensor \"{}\" is in shard \"{}\" but not in the index",
                                    label, t.name, shard));
          if (it->second != shard)
            throw Error(fmt::format("{}: tensor \"{}\" is in two shards, \"{}\" and \"{}\"", label,
                                    t.name, it->second, shard));
        }
    }

    if (fs::is_regular_file(path / "config.json", ec)) {
      ck->config_ = read_json_object(path / "config.json");
      ck->has_config_ = true;
    }
    if (fs::is_regular_file(path / "generation_config.json", ec))
      ck->generation_config_ = read_json_object(path / "generation_config.json");
    ck->sidecars_ = discover_sidecars(path, ck->warnings_);
  }

  for (size_t s = 0; s < ck->shards_.size(); ++s)
    for (const auto& t : ck->shards_[s]->tensors()) {
      // Only reachable across files without an index (a single file has unique names).
      if (!ck->index_.emplace(t.name, std::make_pair(s, &t)).second)
        throw Error(fmt::format("{}: tensor \"{}\" appears twice", path.string(), t.name));
      ck->names_.push_back(t.name);
    }
  std::sort(ck->names_.begin(), ck->names_.end());
  return ck;
}

bool Checkpoint::has(std::string_view name) const { return index_.find(name) != index_.end(); }

const TensorInfo& Checkpoint::info(std::string_view name) const {
  auto it = index_.find(name);
  if (it == index_.end())
    throw Error(fmt::format("{}: no tensor \"{}\"", dir_.string(), std::string(name)));
  return *it->second.second;
}

const SafetensorsFile& Checkpoint::file_of(std::string_view name) const {
  info(name);  // throws for an unknown name
  return *shards_[index_.find(name)->second.first];
}

std::span<const uint8_t> Checkpoint::bytes(std::string_view name) const {
  return file_of(name).bytes(info(name));
}

void Checkpoint::release(std::string_view name) const { file_of(name).release(info(name)); }

uint64_t Checkpoint::total_bytes() const {
  uint64_t n = 0;
  for (const auto& s : shards_)
    for (const auto& t : s->tensors()) n += t.nbytes();
  return n;
}

}  // namespace fp4kit
