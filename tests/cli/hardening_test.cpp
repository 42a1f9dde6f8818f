// Ways a real user can lose data or get a wrong output with exit 0 (issue 14): each test
// fails without its fix. The promise: exit 0 means the output is complete and right; bad input
// gets exit 1 (wrong usage 2) with a message naming the file, tensor and rule, and no input is
// ever overwritten or deleted.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>

#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/io/output_dir.hpp"
#include "fp4kit/io/safetensors_writer.hpp"
#include "fp4kit/io/stats_file.hpp"
#include "fp4kit/model/synthetic_checkpoint.hpp"
#include "fp4kit/numeric/dtype.hpp"
#include "fp4kit/numeric/formats.hpp"
#include "support/file_bytes.hpp"
#include "support/run_command.hpp"
#include "support/shared_data.hpp"
#include "support/small_moe_spec.hpp"
#include "support/temp_dir.hpp"

namespace fp4kit {
namespace {

using testing::quote;
using testing::run_command;
using testing::TempDir;
namespace fs = std::filesystem;

std::string bin() { return testing::fp4kit_binary(); }

std::string quantize_cmd(const fs::path& src, const fs::path& out, const std::string& extra) {
  return testing::quantize_command(src, out, extra);
}

std::string read_file(const fs::path& p) { return testing::file_bytes(p); }

bool contains(const std::string& s, const std::string& what) {
  return s.find(what) != std::string::npos;
}

// Rewrites the weights of `dir` as one model.safetensors: `edit` may change a tensor's bytes
// and returns false to drop it.
void rewrite_weights(const fs::path& dir,
                     const std::function<bool(const std::string&, DType, std::vector<uint8_t>&)>& edit) {
  std::vector<TensorSpec> specs;
  std::vector<std::vector<uint8_t>> data;
  std::vector<fs::path> files;
  {
    auto c = Checkpoint::open(dir);
    for (const auto& s : c->shards()) files.push_back(s->path());
    for (const auto& name : c->tensor_names()) {
      const auto& info = c->info(name);
      const auto b = c->bytes(name);
      std::vector<uint8_t> v(b.begin(), b.end());
      if (!edit(name, info.dtype, v)) continue;
      specs.push_back({name, info.dtype, info.shape});
      data.push_back(std::move(v));
    }
  }
  for (const auto& f : files) fs::remove(f);
  fs::remove(dir / "model.safetensors.index.json");
  CheckpointWriter w(dir, specs);
  for (size_t i = 0; i < specs.size(); ++i) w.write(specs[i].name, data[i]);
  w.finish();
}

void edit_config(const fs::path& dir, const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json c = nlohmann::json::parse(read_file(dir / "config.json"));
  edit(c);
  std::ofstream(dir / "config.json") << c.dump(2);
}

fs::path make_src(const TempDir& tmp, const std::string& name = "src", uint64_t seed = 1) {
  SyntheticMoeSpec s = testing::small_moe_spec();
  s.seed = seed;
  write_synthetic_moe(tmp / name, s);
  return tmp / name;
}

// A token-id file for calibrate/eval (.u16, ids below the synthetic vocab of 128).
fs::path make_tokens(const TempDir& tmp, size_t n = 4096) {
  std::vector<uint16_t> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = static_cast<uint16_t>((i * 37 + 11) % 128);
  const fs::path p = tmp / "tokens.u16";
  std::ofstream(p, std::ios::binary)
      .write(reinterpret_cast<const char*>(ids.data()), static_cast<std::streamsize>(n * 2));
  return p;
}

// ---- 1. two writers on one OUT --------------------------------------------------------------

TEST(Hardening, SecondWriterOnTheSameOutIsRefusedWhileTheFirstHoldsTheLock) {
  TempDir tmp;
  const auto src = make_src(tmp);
  // The first run: a live OUT.partial, made and locked as fp4kit makes it.
  const fs::path partial = tmp / "out.partial";
  fs::create_directories(partial);
  std::ofstream(partial / kPartialMarker) << "x";
  std::ofstream(partial / "model-00001-of-00002.safetensors") << "half a shard";
  const int fd = ::open(partial.c_str(), O_RDONLY | O_DIRECTORY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
  const auto r = run_command(quantize_cmd(src, tmp / "out", "--weights-only"));
  ::close(fd);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "another fp4kit run")) << r.output;
  EXPECT_TRUE(fs::exists(partial / "model-00001-of-00002.safetensors"))
      << "the first run's output was deleted";
  EXPECT_FALSE(fs::exists(tmp / "out"));
  // Once the first run is gone (a kill: marker, no lock), its leftover is ours to clean.
  const auto again = run_command(quantize_cmd(src, tmp / "out", "--weights-only"));
  EXPECT_EQ(again.exit_code, 0) << again.output;
  EXPECT_FALSE(fs::exists(partial));
  EXPECT_FALSE(fs::exists(tmp / "out" / kPartialMarker)) << "the marker must not reach OUT";
}

TEST(Hardening, TwoRunsStartedTogetherNeverMixTheirOutputs) {
  TempDir tmp;
  const auto src = make_src(tmp);
  const auto a = quote(tmp.path().string());
  const std::string cmd = quantize_cmd(src, tmp / "out", "--weights-only");
  // Both at once, several times: each either finishes or is refused; OUT is always complete.
  for (int i = 0; i < 4; ++i) {
    fs::remove_all(tmp / "out");
    const auto r = run_command("(" + cmd + " > " + a + "/r1 2>&1; echo $? > " + a + "/c1) & (" +
                               cmd + " > " + a + "/r2 2>&1; echo $? > " + a + "/c2) & wait");
    ASSERT_EQ(r.exit_code, 0);
    const int c1 = std::stoi(read_file(tmp / "c1")), c2 = std::stoi(read_file(tmp / "c2"));
    EXPECT_TRUE(c1 == 0 || c2 == 0) << read_file(tmp / "r1") << read_file(tmp / "r2");
    for (auto [c, f] : {std::pair{c1, "r1"}, std::pair{c2, "r2"}})
      if (c != 0) {
        const std::string out = read_file(tmp / f);
        EXPECT_TRUE(contains(out, "another fp4kit run") || contains(out, "not empty")) << out;
      }
    ASSERT_TRUE(fs::exists(tmp / "out" / "config.json"));
    const auto v = run_command(bin() + " verify " + quote((tmp / "out").string()) + " --source " +
                               quote(src.string()) + " -q");
    EXPECT_EQ(v.exit_code, 0) << v.output;
    EXPECT_FALSE(fs::exists(tmp / "out.partial"));
  }
}

// ---- 7. an OUT.partial fp4kit did not make --------------------------------------------------

TEST(Hardening, ForeignOutPartialIsNeverDeleted) {
  TempDir tmp;
  const auto src = make_src(tmp);
  fs::create_directories(tmp / "out.partial");
  std::ofstream(tmp / "out.partial" / "thesis.tex") << "years of work";
  auto r = run_command(quantize_cmd(src, tmp / "out", "--weights-only"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "not made by fp4kit")) << r.output;
  EXPECT_EQ(read_file(tmp / "out.partial" / "thesis.tex"), "years of work");
  // A plain file of that name likewise.
  std::ofstream(tmp / "b.partial") << "notes";
  r = run_command(quantize_cmd(src, tmp / "b", "--weights-only"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(read_file(tmp / "b.partial"), "notes");
}

// ---- 2. output options aimed at an input ----------------------------------------------------

TEST(Hardening, OutputOptionsNeverReplaceAnInput) {
  TempDir tmp;
  const auto src = make_src(tmp);
  const fs::path shard = src / "model.safetensors";
  const std::string before = read_file(shard);
  fs::create_directory_symlink(src, tmp / "srclink");
  fs::create_hard_link(shard, tmp / "hardlink.safetensors");
  const auto data = make_tokens(tmp);
  // The same file by name, through a symlinked directory, and through a hard link.
  for (const fs::path target : {shard, tmp / "srclink" / "model.safetensors",
                                tmp / "hardlink.safetensors"}) {
    const auto t = quote(target.string());
    for (const std::string& cmd :
         {quantize_cmd(src, tmp / "out", "--weights-only --dry-run --plan-json " + t),
          quantize_cmd(src, tmp / "out", "--weights-only --report " + t),
          bin() + " calibrate " + quote(src.string()) + " --data " + quote(data.string()) +
              " --samples 2 --seq-len 16 -o " + t,
          bin() + " eval " + quote(src.string()) + " --data " + quote(data.string()) +
              " --ctx 16 --chunks 1 --save-base " + t + " --base " + quote(src.string()),
          bin() + " eval " + quote(src.string()) + " --data " + quote(data.string()) +
              " --ctx 16 --chunks 1 --dump-logits " + t}) {
      const auto r = run_command(cmd);
      EXPECT_EQ(r.exit_code, 1) << cmd << "\n" << r.output;
      EXPECT_TRUE(contains(r.output, "refusing")) << cmd << "\n" << r.output;
      ASSERT_EQ(read_file(shard), before) << cmd << " changed the source";
    }
  }
  EXPECT_FALSE(fs::exists(tmp / "out"));
  // --save-base aimed at the data file.
  const std::string data_before = read_file(data);
  const auto r = run_command(bin() + " eval " + quote(src.string()) + " --data " +
                             quote(data.string()) + " --ctx 16 --chunks 1 --base " +
                             quote(src.string()) + " --save-base " + quote(data.string()));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(read_file(data), data_before);
}

// ---- 3. --force over the source seen through another path -----------------------------------

TEST(Hardening, ForceNeverDeletesTheSourceThroughAnotherPath) {
  TempDir tmp;
  const auto src = make_src(tmp, "models/src");
  fs::create_directory_symlink(tmp / "models", tmp / "link");
  fs::create_directory_symlink(src, tmp / "srclink");
  const std::string before = read_file(src / "model.safetensors");
  for (const auto& [s, o] : {std::pair{src, tmp / "link"}, std::pair{tmp / "srclink", tmp / "models"},
                             std::pair{src, tmp / "link" / "src"}, std::pair{src, tmp / "srclink"}}) {
    const auto r = run_command(quantize_cmd(s, o, "--weights-only --force"));
    EXPECT_EQ(r.exit_code, 1) << s << " -> " << o << "\n" << r.output;
    ASSERT_EQ(read_file(src / "model.safetensors"), before);
  }
  // A bind mount shows the same directory under a name no symlink resolution reveals: only
  // device + inode identify it. Needs a private mount namespace (unshare -rm).
  fs::create_directories(tmp / "mnt");
  const auto probe = run_command("unshare -rm true");
  if (probe.exit_code != 0) GTEST_SKIP() << "no unprivileged mount namespace: " << probe.output;
  const auto r = run_command("unshare -rm sh -c " +
                             quote("mount --bind " + quote((tmp / "models").string()) + " " +
                                   quote((tmp / "mnt").string()) + " && " +
                                   quantize_cmd(src, tmp / "mnt", "--weights-only --force")));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "contains the source")) << r.output;
  ASSERT_EQ(read_file(src / "model.safetensors"), before);
}

// ---- 4. stats from another model -------------------------------------------------------------

TEST(Hardening, StatsOfAnotherModelAreRefused) {
  TempDir tmp;
  const auto a = make_src(tmp, "a", 1);
  const auto b = make_src(tmp, "b", 2);  // same architecture and names, other weights
  const auto data = make_tokens(tmp);
  const auto stats = tmp / "a.stats.safetensors";
  auto r = run_command(bin() + " calibrate " + quote(a.string()) + " --data " +
                       quote(data.string()) + " --samples 2 --seq-len 32 -o " +
                       quote(stats.string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_command(quantize_cmd(b, tmp / "out", "--stats " + quote(stats.string())));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "another model")) << r.output;
  EXPECT_FALSE(fs::exists(tmp / "out"));
  // A copy of model a elsewhere is the same model.
  fs::copy(a, tmp / "a-copy", fs::copy_options::recursive);
  r = run_command(quantize_cmd(tmp / "a-copy", tmp / "out", "--stats " + quote(stats.string())));
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

// W4A4 from a checkpoint that is already NVFP4 (fp4kit's own W4A16 output): its NVFP4 linears
// would be copied without the input_scale W4A4 needs. Refused before anything is written,
// naming the checkpoint and what to do instead; the weights-only run of that source is not.
TEST(Hardening, W4A4FromAnNvfp4CheckpointIsRefusedUpFront) {
  TempDir tmp;
  const auto src = make_src(tmp);
  const auto w16 = tmp / "w16";
  auto r = run_command(testing::quantize_command(src, w16, "--weights-only"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto data = make_tokens(tmp);
  const auto stats = tmp / "w16.stats.safetensors";
  r = run_command(bin() + " calibrate " + quote(w16.string()) + " --data " +
                  quote(data.string()) + " --samples 2 --seq-len 32 -o " + quote(stats.string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_command(testing::quantize_command(w16, tmp / "out", "--stats " + quote(stats.string())));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "already an NVFP4 checkpoint")) << r.output;
  EXPECT_TRUE(contains(r.output, w16.string())) << r.output;
  EXPECT_FALSE(contains(r.output, "verification")) << "refused only after the whole run";
  EXPECT_FALSE(fs::exists(tmp / "out"));
  EXPECT_FALSE(fs::exists(tmp / "out.partial"));
}

TEST(Hardening, StatsVectorLengthsMustMatchTheModel) {
  TempDir tmp;
  const auto src = make_src(tmp);
  ActivationStats st;
  st.metadata = {{"format", "fp4kit-stats"}, {"version", "1"}};
  auto c = Checkpoint::open(src);
  for (const auto& n : c->tensor_names()) {
    if (n.find("_proj.weight") == std::string::npos) continue;
    const std::string m = n.substr(0, n.size() - 7);
    st.input_amax[m] = 1.0f;
    st.token_count[m] = 10;
    st.input_sq_sum[m] = std::vector<double>(c->info(n).shape[1] * 2, 1.0);  // twice K
  }
  write_stats_file(tmp / "s.safetensors", st);
  const auto r = run_command(quantize_cmd(src, tmp / "out", "--stats " +
                                          quote((tmp / "s.safetensors").string())));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "input_sq_sum has")) << r.output;
}

// ---- 5. holes in the architecture -------------------------------------------------------------

TEST(Hardening, MissingLayerProjectionOrRouterIsAnError) {
  const std::vector<std::pair<std::string, std::string>> holes = {
      {"model.layers.1.self_attn.q_proj.weight", "model.layers.1.self_attn.q_proj.weight"},
      {"model.layers.0.mlp.gate.weight", "model.layers.0.mlp.gate.weight"},
      {"model.layers.1.", "layer 1 is missing"}};
  for (const auto& [drop, expect] : holes) {
    TempDir tmp;
    const auto src = make_src(tmp);
    rewrite_weights(src, [&](const std::string& n, DType, std::vector<uint8_t>&) {
      return n.rfind(drop, 0) != 0;
    });
    const auto r = run_command(quantize_cmd(src, tmp / "out", "--weights-only"));
    EXPECT_EQ(r.exit_code, 1) << drop << "\n" << r.output;
    EXPECT_TRUE(contains(r.output, expect)) << r.output;
    EXPECT_FALSE(fs::exists(tmp / "out"));
  }
}

// ---- 6. a tensor destroyed by quantization ---------------------------------------------------

TEST(Hardening, DestroyedTensorFailsTheDefaultRun) {
  TempDir tmp;
  const auto src = make_src(tmp);
  // q_proj scaled by 2^-24 shares weight_scale_2 with k/v: its block scales underflow to zero.
  rewrite_weights(src, [](const std::string& n, DType dt, std::vector<uint8_t>& v) {
    if (n == "model.layers.1.self_attn.q_proj.weight") {
      EXPECT_EQ(dt, DType::BF16);
      for (size_t i = 0; i + 1 < v.size(); i += 2) {
        uint16_t b;
        std::memcpy(&b, &v[i], 2);
        const float x = std::ldexp(bf16_to_float(b), -24);
        b = float_to_bf16(x);
        std::memcpy(&v[i], &b, 2);
      }
    }
    return true;
  });
  for (const char* level : {"structural", "none"}) {
    const auto r = run_command(quantize_cmd(src, tmp / "out", std::string("--weights-only --verify ") + level));
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_TRUE(contains(r.output, "model.layers.1.self_attn.q_proj")) << r.output;
    EXPECT_TRUE(contains(r.output, "destroys")) << r.output;
    EXPECT_FALSE(fs::exists(tmp / "out"));
  }
  const auto ok = run_command(quantize_cmd(src, tmp / "out", "--weights-only --exclude "
                                           "'*.layers.1.self_attn.*'"));
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
}

TEST(Hardening, RealQwen3MoeTinyQkFailsWithoutVerifyFull) {
  FP4KIT_REQUIRE_SHARED(src, "models/stories260k-qwen3moe");
  TempDir tmp;
  const auto r = run_command(quantize_cmd(src, tmp / "out", "--weights-only"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "model.layers.0.self_attn.k_proj") &&
              contains(r.output, "destroys"))
      << r.output;
  EXPECT_FALSE(fs::exists(tmp / "out"));
}

// ---- 8. symbolic links leading out of the checkpoint ------------------------------------------

TEST(Hardening, LinksOutOfTheCheckpointAreNotCopied) {
  TempDir tmp;
  const auto src = make_src(tmp);
  fs::create_directories(tmp / "outside");
  std::ofstream(tmp / "outside" / "secret.txt") << "root:x:0:0";
  fs::create_symlink(tmp / "outside" / "secret.txt", src / "notes.txt");
  std::ofstream(src / "README.md") << "model card";
  fs::create_symlink("README.md", src / "alias.md");  // inside: fine
  const auto r = run_command(quantize_cmd(src, tmp / "out", "--weights-only"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "notes.txt")) << "say which file was left out:\n" << r.output;
  EXPECT_FALSE(fs::exists(tmp / "out" / "notes.txt"));
  EXPECT_EQ(read_file(tmp / "out" / "alias.md"), "model card");
  // A Hugging Face cache snapshot: every file a link into the repository's blobs/.
  const fs::path repo = tmp / "hub" / "models--x--y";
  const fs::path snap = repo / "snapshots" / "rev1";
  fs::create_directories(repo / "blobs");
  fs::create_directories(snap);
  for (const auto& e : fs::directory_iterator(src)) {
    if (e.is_symlink()) continue;
    const std::string blob = "blob-" + e.path().filename().string();
    fs::copy_file(e.path(), repo / "blobs" / blob);
    fs::create_symlink("../../blobs/" + blob, snap / e.path().filename());
  }
  const auto h = run_command(quantize_cmd(snap, tmp / "out2", "--weights-only"));
  ASSERT_EQ(h.exit_code, 0) << h.output;
  EXPECT_FALSE(contains(h.output, "outside the checkpoint")) << h.output;
  EXPECT_EQ(read_file(tmp / "out2" / "README.md"), "model card");
}

// ---- 9. stray shards and a wrong total_size ---------------------------------------------------

void write_stray(const TempDir& tmp, const fs::path& file, const std::string& tensor) {
  const fs::path d = tmp / "stray-build";
  fs::remove_all(d);
  fs::create_directories(d);
  CheckpointWriter w(d, {{tensor, DType::F32, {4}}});
  std::vector<uint8_t> zeros(16, 0);
  w.write(tensor, zeros);
  w.finish();
  fs::rename(d / "model.safetensors", file);
}

TEST(Hardening, ShardsTheIndexDoesNotReferenceAreReported) {
  TempDir tmp;
  SyntheticMoeSpec spec = testing::small_moe_spec();
  spec.max_shard_bytes = 64 << 10;
  write_synthetic_moe(tmp / "src", spec);
  const fs::path src = tmp / "src";
  ASSERT_TRUE(fs::exists(src / "model.safetensors.index.json"));
  // Same name as a tensor the index maps elsewhere: which is the model's? An error.
  write_stray(tmp, src / "model-old.safetensors", "model.layers.0.self_attn.q_proj.weight");
  auto r = run_command(quantize_cmd(src, tmp / "out", "--weights-only"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "model-old.safetensors") &&
              contains(r.output, "model.layers.0.self_attn.q_proj.weight"))
      << r.output;
  EXPECT_FALSE(fs::exists(tmp / "out"));
  // No collision: a warning naming the file.
  write_stray(tmp, src / "model-old.safetensors", "something.else");
  r = run_command(quantize_cmd(src, tmp / "out", "--weights-only --dry-run"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "model-old.safetensors is not referenced")) << r.output;
  // total_size that disagrees with the shards.
  fs::remove(src / "model-old.safetensors");
  nlohmann::json idx = nlohmann::json::parse(read_file(src / "model.safetensors.index.json"));
  idx["metadata"]["total_size"] = idx["metadata"]["total_size"].get<uint64_t>() * 2;
  std::ofstream(src / "model.safetensors.index.json") << idx.dump();
  r = run_command(quantize_cmd(src, tmp / "out", "--weights-only --dry-run"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "total_size")) << r.output;
}

}  // namespace
}  // namespace fp4kit

namespace fp4kit {
namespace {

// ---- 16. Ctrl-C / SIGTERM ---------------------------------------------------------------------

TEST(Hardening, TerminationRemovesTheUnfinishedOutputAndSaysSo) {
  TempDir tmp;
  SyntheticMoeSpec s = testing::small_moe_spec();
  s.layers = 2;
  s.hidden = 256;
  s.experts = 16;
  s.moe_intermediate = 256;
  write_synthetic_moe(tmp / "src", s);
  const auto d = quote(tmp.path().string());
  const std::string cmd = quantize_cmd(tmp / "src", tmp / "out", "--weights-only --threads 1");
  // SIGTERM (kill, systemd, a job scheduler) and SIGINT (Ctrl-C) alike.
  for (const auto& [sig, rc] : {std::pair<std::string, int>{"TERM", 143}, {"INT", 130}}) {
    const auto r = run_command("cd " + d + " && (" + cmd + " > log 2>&1 & pid=$!; " +
                               "while [ ! -d out.partial ] && kill -0 $pid 2>/dev/null; do sleep 0.005; done; " +
                               "kill -" + sig + " $pid; wait $pid; echo rc=$?)");
    const std::string log = read_file(tmp / "log");
    ASSERT_TRUE(contains(r.output, "rc=" + std::to_string(rc))) << sig << r.output << log;
    EXPECT_TRUE(contains(log, "interrupted")) << log;
    EXPECT_TRUE(contains(log, "out.partial")) << log;
    EXPECT_FALSE(fs::exists(tmp / "out.partial"));
    EXPECT_FALSE(fs::exists(tmp / "out"));
  }
}

// ---- 16. --weights-only with --stats -----------------------------------------------------------

TEST(Hardening, WeightsOnlyWithStatsIsWrongUsage) {
  TempDir tmp;
  const auto src = make_src(tmp);
  const auto r = run_command(quantize_cmd(src, tmp / "out", "--weights-only --stats " +
                                          quote((tmp / "nope.safetensors").string())));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "--stats")) << r.output;
}

// ---- 14. output paths checked before any work -------------------------------------------------

TEST(Hardening, BadOutputPathsFailBeforeAnythingIsWritten) {
  TempDir tmp;
  const auto src = make_src(tmp);
  // A --report in a missing directory used to surface after OUT was committed.
  auto r = run_command(quantize_cmd(src, tmp / "out", "--weights-only --report " +
                                    quote((tmp / "no" / "such" / "r.json").string())));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "--report")) << r.output;
  EXPECT_FALSE(fs::exists(tmp / "out")) << "OUT committed although the run failed";
  for (const char* out : {".", ".."}) {
    r = run_command("cd " + quote((tmp / "src").string()) + " && " +
                    quantize_cmd(src, out, "--weights-only --force"));
    EXPECT_EQ(r.exit_code, 1) << out << r.output;
    EXPECT_FALSE(contains(r.output, "wrote")) << r.output;
    EXPECT_TRUE(fs::exists(src / "model.safetensors"));
  }
  // A non-UTF-8 path still gives a valid JSON report.
  fs::create_directories(tmp / "src\xff");
  fs::copy(src, tmp / "src\xff", fs::copy_options::recursive);
  r = run_command(quantize_cmd(tmp / "src\xff", tmp / "out3",
                               "--weights-only --report " + quote((tmp / "r.json").string())));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NO_THROW((void)nlohmann::json::parse(read_file(tmp / "r.json")));
}

// ---- 15. one rule for --threads; missing operands are wrong usage ------------------------------

TEST(Hardening, ThreadsAndMissingOperandsFollowOneRule) {
  TempDir tmp;
  const auto src = make_src(tmp);
  const auto data = make_tokens(tmp);
  const std::string s = quote(src.string());
  for (const std::string& cmd :
       {bin() + " quantize " + s + " " + quote((tmp / "o").string()) + " --weights-only --threads -5",
        bin() + " eval " + s + " --data " + quote(data.string()) + " --threads -5",
        bin() + " calibrate " + s + " --data " + quote(data.string()) + " -o x --threads -5",
        bin() + " verify " + s + " --threads -5",
        bin() + " quantize " + s + " --weights-only",
        bin() + " eval " + s}) {
    const auto r = run_command(cmd);
    EXPECT_EQ(r.exit_code, 2) << cmd << "\n" << r.output;
  }
}

}  // namespace
}  // namespace fp4kit

namespace fp4kit {
namespace {

// ---- 13. absurd scales --------------------------------------------------------------------------

void write_amax_stats(const fs::path& src, const fs::path& file, float amax) {
  ActivationStats st;
  st.metadata = {{"format", "fp4kit-stats"}, {"version", "1"}};
  auto c = Checkpoint::open(src);
  for (const auto& n : c->tensor_names()) {
    if (n.find("_proj.weight") == std::string::npos) continue;
    const std::string m = n.substr(0, n.size() - 7);
    st.input_amax[m] = amax;
    st.token_count[m] = 10;
  }
  write_stats_file(file, st);
}

void set_scalar(const fs::path& dir, const std::string& tensor, float v) {
  bool found = false;
  rewrite_weights(dir, [&](const std::string& n, DType, std::vector<uint8_t>& b) {
    if (n == tensor) {
      EXPECT_EQ(b.size(), 4u);
      std::memcpy(b.data(), &v, 4);
      found = true;
    }
    return true;
  });
  ASSERT_TRUE(found) << tensor;
}

TEST(Hardening, VerifyRefusesImplausibleScales) {
  TempDir tmp;
  const auto src = make_src(tmp);
  write_amax_stats(src, tmp / "s.safetensors", 4.0f);
  auto r = run_command(quantize_cmd(src, tmp / "good", "--stats " + quote((tmp / "s.safetensors").string())));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string m = "model.layers.0.mlp.experts.1.up_proj";
  const std::vector<std::tuple<std::string, float, bool>> cases = {
      {m + ".weight_scale_2", 1e36f, false}, {m + ".input_scale", 1e30f, true},
      {m + ".input_scale", 1e-30f, true}};
  for (const auto& [tensor, value, with_source] : cases) {
    fs::remove_all(tmp / "bad");
    fs::copy(tmp / "good", tmp / "bad", fs::copy_options::recursive);
    set_scalar(tmp / "bad", tensor, value);
    const auto v = run_command(bin() + " verify " + quote((tmp / "bad").string()) +
                               (with_source ? " --source " + quote(src.string()) : ""));
    EXPECT_EQ(v.exit_code, 1) << tensor << " = " << value << "\n" << v.output;
    EXPECT_TRUE(contains(v.output, tensor) && contains(v.output, "implausible")) << v.output;
  }
  // Statistics that would give such a scale are refused by quantize (not "(internal error)").
  write_amax_stats(src, tmp / "tiny.safetensors", 1e-40f);
  r = run_command(quantize_cmd(src, tmp / "out", "--stats " + quote((tmp / "tiny.safetensors").string())));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_FALSE(contains(r.output, "internal error")) << r.output;
  EXPECT_TRUE(contains(r.output, "tiny.safetensors")) << r.output;
}

}  // namespace
}  // namespace fp4kit

namespace fp4kit {
namespace {

// ---- 10. data that never ends -------------------------------------------------------------------

TEST(Hardening, DataFromADeviceIsRefusedNotReadForever) {
  TempDir tmp;
  const auto src = make_src(tmp);
  for (const std::string& cmd :
       {bin() + " calibrate " + quote(src.string()) + " --data /dev/zero --samples 1 --seq-len 8 -o " +
            quote((tmp / "s.safetensors").string()),
        bin() + " eval " + quote(src.string()) + " --data /dev/zero --ctx 8"}) {
    const auto r = run_command("timeout 20 " + cmd);
    EXPECT_EQ(r.exit_code, 1) << cmd << "\n" << r.output;
    EXPECT_TRUE(contains(r.output, "not a regular file")) << r.output;
  }
}

}  // namespace
}  // namespace fp4kit

namespace fp4kit {
namespace {

// ---- 15. messages that name the file, the tensor and the real cause ---------------------------

TEST(Hardening, EvalWithAZeroWeightScale2NamesTheTensorAndTheCause) {
  TempDir tmp;
  const auto src = make_src(tmp);
  const auto data = make_tokens(tmp);
  auto r = run_command(quantize_cmd(src, tmp / "q", "--weights-only"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string t = "model.layers.0.mlp.experts.1.up_proj.weight_scale_2";
  set_scalar(tmp / "q", t, 0.0f);
  r = run_command(bin() + " eval " + quote((tmp / "q").string()) + " --data " +
                  quote(data.string()) + " --ctx 16 --chunks 1");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, t)) << r.output;
  EXPECT_TRUE(contains(r.output, "model.safetensors")) << r.output;
  EXPECT_TRUE(contains(r.output, "= 0") && contains(r.output, "positive and finite")) << r.output;
}

TEST(Hardening, CalibrateNeverPrintsAnOverflowedProduct) {
  TempDir tmp;
  const auto src = make_src(tmp);
  const auto data = make_tokens(tmp);
  // Products beyond int64 printed as "= 0", "= 1" or "= -9223372036854775807".
  const auto calibrate = [&](const std::string& sizes) {
    return run_command(bin() + " calibrate " + quote(src.string()) + " --data " +
                       quote(data.string()) + " " + sizes + " -o " +
                       quote((tmp / "s.safetensors").string()));
  };
  for (const std::string& sizes :
       {std::string("--samples 4611686018427387904 --seq-len 8"),
        std::string("--samples 9223372036854775807 --seq-len 9223372036854775807"),
        std::string("--samples 4611686018427387903 --seq-len 4611686018427387903")}) {
    const auto r = calibrate(sizes);
    EXPECT_EQ(r.exit_code, 1) << sizes << "\n" << r.output;
    EXPECT_FALSE(contains(r.output, " = ")) << r.output;
    EXPECT_TRUE(contains(r.output, "too large") && contains(r.output, "tokens.u16")) << r.output;
    EXPECT_FALSE(fs::exists(tmp / "s.safetensors"));
  }
  // A product that fits is printed exactly: 2^40 x 2^20 = 2^60.
  const auto r = calibrate("--samples 1099511627776 --seq-len 1048576");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "= 1152921504606846976")) << r.output;
}

TEST(Hardening, HugeMaxShardSizeIsReportedAsTooLarge) {
  TempDir tmp;
  const auto src = make_src(tmp);
  for (const char* size : {"1e30GB", "99999999999999999999999", "20000000000TB"}) {
    const auto r = run_command(quantize_cmd(src, tmp / "o", std::string("--weights-only --max-shard-size ") + size));
    EXPECT_EQ(r.exit_code, 2) << size << "\n" << r.output;
    EXPECT_TRUE(contains(r.output, "--max-shard-size") && contains(r.output, "too large")) << r.output;
    EXPECT_FALSE(contains(r.output, "at least 1 byte")) << r.output;
    EXPECT_FALSE(fs::exists(tmp / "o"));
  }
  // The largest value is still a size (no shard limit in practice).
  const auto r = run_command(quantize_cmd(src, tmp / "o", "--weights-only --max-shard-size 1000TB"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

TEST(Hardening, QuantizationConfigOfTheWrongTypeIsMalformedNotMissing) {
  TempDir tmp;
  const auto src = make_src(tmp);
  auto r = run_command(quantize_cmd(src, tmp / "q", "--weights-only"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  fs::remove(tmp / "q" / "hf_quant_config.json");
  edit_config(tmp / "q", [](nlohmann::json& c) { c["quantization_config"] = "modelopt"; });
  r = run_command(bin() + " verify " + quote((tmp / "q").string()));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "quantization_config") &&
              contains(r.output, "malformed (a string, expected an object)")) << r.output;
  EXPECT_FALSE(contains(r.output, "neither")) << r.output;
  // The same rule for a source checkpoint.
  edit_config(src, [](nlohmann::json& c) { c["quantization_config"] = 7; });
  r = run_command(quantize_cmd(src, tmp / "o", "--weights-only"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "quantization_config") && contains(r.output, "malformed (a number, expected an object)"))
      << r.output;
}

TEST(Hardening, EvalNeverReportsANonFinitePerplexity) {
  TempDir tmp;
  const auto src = make_src(tmp);
  const auto good = make_src(tmp, "good");
  const auto data = make_tokens(tmp);
  // An Inf in the final norm makes every logit non-finite.
  rewrite_weights(src, [](const std::string& n, DType d, std::vector<uint8_t>& b) {
    if (n == "model.norm.weight") {
      EXPECT_EQ(d, DType::BF16);
      for (size_t i = 0; i < b.size(); i += 2) { b[i] = 0x80; b[i + 1] = 0x7f; }  // bf16 +Inf
    }
    return true;
  });
  const auto r = run_command(bin() + " eval " + quote(src.string()) + " --data " +
                             quote(data.string()) + " --ctx 16 --chunks 2");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_FALSE(contains(r.output, "PPL =")) << r.output;
  EXPECT_TRUE(contains(r.output, "not finite") && contains(r.output, src.string())) << r.output;
  // Against a good base: the same error, and no half-written --save-base file is left behind.
  const auto s = run_command(bin() + " eval " + quote(src.string()) + " --base " +
                             quote(good.string()) + " --data " + quote(data.string()) +
                             " --ctx 16 --chunks 2 --json --save-base " +
                             quote((tmp / "base.bin").string()));
  EXPECT_EQ(s.exit_code, 1) << s.output;
  EXPECT_TRUE(contains(s.output, "not finite")) << s.output;
  EXPECT_FALSE(contains(s.output, "\"ppl\"")) << s.output;
  EXPECT_FALSE(fs::exists(tmp / "base.bin"));
}

TEST(Hardening, NonUtf8PathsGiveValidJsonInEveryOutput) {
  TempDir tmp;
  const fs::path src = make_src(tmp, "src\xff");
  const fs::path data = tmp / "tok\xfe.u16";
  fs::rename(make_tokens(tmp), data);
  const fs::path stats = tmp / "s\xfd.safetensors";
  const std::string s = quote(src.string()), d = quote(data.string());
  auto r = run_command(bin() + " calibrate " + s + " --data " + d + " --samples 2 --seq-len 16 -o " +
                       quote(stats.string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_command(quantize_cmd(src, tmp / "q\xfc", "--stats " + quote(stats.string())));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string q = quote((tmp / "q\xfc").string());
  for (const std::string& cmd :
       {bin() + " inspect " + q + " --json", bin() + " inspect " + quote(stats.string()) + " --json",
        bin() + " eval " + q + " --base " + s + " --data " + d + " --ctx 16 --chunks 1 --json"}) {
    r = run_command(cmd + " 2>/dev/null");
    EXPECT_EQ(r.exit_code, 0) << cmd << "\n" << r.output;
    nlohmann::json j;
    EXPECT_NO_THROW(j = nlohmann::json::parse(r.output)) << cmd << "\n" << r.output;
  }
  r = run_command(bin() + " verify " + q + " --report " + quote((tmp / "v.json").string()));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NO_THROW((void)nlohmann::json::parse(read_file(tmp / "v.json")));
}

// ---- 16. NaN/Inf in tensors kept unquantized -----------------------------------------------------

TEST(Hardening, NonFiniteValuesInKeptTensorsAreReportedByName) {
  TempDir tmp;
  const auto src = make_src(tmp);
  // The router gets 3 NaN, the final norm 1 Inf, the embedding 2 NaN and 1 -Inf (all BF16).
  const std::map<std::string, std::vector<std::pair<size_t, uint16_t>>> poison = {
      {"model.layers.0.mlp.gate.weight", {{0, 0x7FC0}, {5, 0xFFC0}, {9, 0x7F81}}},
      {"model.norm.weight", {{3, 0x7F80}}},
      {"model.embed_tokens.weight", {{1, 0x7FC0}, {2, 0x7FC0}, {100, 0xFF80}}}};
  rewrite_weights(src, [&](const std::string& n, DType d, std::vector<uint8_t>& b) {
    if (auto it = poison.find(n); it != poison.end()) {
      EXPECT_EQ(d, DType::BF16);
      for (const auto& [i, bits] : it->second) std::memcpy(b.data() + 2 * i, &bits, 2);
    }
    return true;
  });
  const auto r = run_command(quantize_cmd(src, tmp / "q", "--weights-only --report " +
                                          quote((tmp / "r.json").string())));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "tensor 'model.layers.0.mlp.gate.weight'") &&
              contains(r.output, "holds 3 NaN and 0 Inf")) << r.output;
  EXPECT_TRUE(contains(r.output, "tensor 'model.norm.weight'") && contains(r.output, "holds 0 NaN and 1 Inf"))
      << r.output;
  EXPECT_TRUE(contains(r.output, "tensor 'model.embed_tokens.weight'") &&
              contains(r.output, "holds 2 NaN and 1 Inf")) << r.output;
  size_t warnings = 0;
  for (size_t p = 0; (p = r.output.find("fp4kit: warning: tensor", p)) != std::string::npos; ++p) ++warnings;
  EXPECT_EQ(warnings, 3u) << r.output;
  const auto report = nlohmann::json::parse(read_file(tmp / "r.json"));
  size_t reported = 0;
  for (const auto& t : report["tensors"])
    if (t.contains("nan")) {
      ++reported;
      const auto& bad = poison.at(t["name"].get<std::string>());
      EXPECT_EQ(t["nan"].get<size_t>() + t["inf"].get<size_t>(), bad.size()) << t.dump();
    }
  EXPECT_EQ(reported, 3u);
  // A clean source: no such warning.
  const auto clean = run_command(quantize_cmd(make_src(tmp, "clean"), tmp / "q2", "--weights-only"));
  ASSERT_EQ(clean.exit_code, 0) << clean.output;
  EXPECT_FALSE(contains(clean.output, "NaN")) << clean.output;
}

// ---- 10. calibrate / eval read only what they use ------------------------------------------------

// Runs `cmd` under /bin/sh and returns its exit code, the peak RSS (KiB) and the CPU seconds
// (user + system) of the process tree it waited for (getrusage of the child).
struct Measured {
  int exit_code;
  long rss_kib;
  double cpu_s;
};
Measured run_measuring_rss(const std::string& cmd) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execl("/bin/sh", "sh", "-c", (cmd + " >/dev/null 2>&1").c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  struct rusage ru {};
  ::wait4(pid, &status, 0, &ru);
  const double cpu = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                     1e-6 * static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, ru.ru_maxrss, cpu};
}

TEST(Hardening, CalibrateAndEvalReadOnlyThePrefixTheyUse) {
  TempDir tmp;
  const auto src = make_src(tmp);
  // 200 MB of token ids: a varied first part (the budget of 4 Mi ids plus some), then zeros
  // (sparse: cheap to make). Reading it whole took ~600 MB of memory.
  const uint64_t budget = uint64_t{1} << 22;
  std::vector<uint16_t> ids(budget + 100000);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<uint16_t>((i * 7919 + i / 97) % 128);
  const auto write_ids = [&](const std::string& name, uint64_t n) {
    const fs::path p = tmp / name;
    std::ofstream(p, std::ios::binary)
        .write(reinterpret_cast<const char*>(ids.data()), static_cast<std::streamsize>(n * 2));
    return p;
  };
  const fs::path big = write_ids("big.u16", ids.size());
  fs::resize_file(big, 200u << 20);
  // What each command needs, as a file of its own: the budget (calibrate), 2 x 16 + 1 (eval).
  const fs::path calib_head = write_ids("calib.u16", budget), eval_head = write_ids("eval.u16", 33);
  const auto calibrate = [&](const fs::path& data, const std::string& out) {
    return bin() + " calibrate " + quote(src.string()) + " --data " + quote(data.string()) +
           " --samples 4 --seq-len 32 --threads 1 -o " + quote((tmp / out).string());
  };
  const auto [rc, rss_kib, cpu_unused] = run_measuring_rss(calibrate(big, "big.safetensors"));
  ASSERT_EQ(rc, 0);
  EXPECT_LT(rss_kib, 100 * 1024) << "calibrate's peak RSS on a 200 MB data file";
  std::printf("peak RSS: calibrate %ld KiB\n", rss_kib);
  ASSERT_EQ(run_command(calibrate(calib_head, "head.safetensors")).exit_code, 0);
  const ActivationStats a = read_stats_file(tmp / "big.safetensors");
  const ActivationStats b = read_stats_file(tmp / "head.safetensors");
  EXPECT_EQ(a.input_amax, b.input_amax);
  EXPECT_EQ(a.token_count, b.token_count);
  EXPECT_FALSE(a.input_amax.empty());

  const auto eval = [&](const fs::path& data) {
    return bin() + " eval " + quote(src.string()) + " --data " + quote(data.string()) +
           " --ctx 16 --chunks 2 --threads 1 --json";
  };
  const auto [erc, erss_kib, ecpu_unused] = run_measuring_rss(eval(big));
  ASSERT_EQ(erc, 0);
  EXPECT_LT(erss_kib, 100 * 1024) << "eval's peak RSS on a 200 MB data file";
  std::printf("peak RSS: eval %ld KiB\n", erss_kib);
  const auto e1 = run_command(eval(big) + " 2>/dev/null"), e2 = run_command(eval(eval_head) + " 2>/dev/null");
  ASSERT_EQ(e1.exit_code, 0) << e1.output;
  ASSERT_EQ(e2.exit_code, 0) << e2.output;
  const auto j1 = nlohmann::json::parse(e1.output), j2 = nlohmann::json::parse(e2.output);
  EXPECT_EQ(j1["ppl"], j2["ppl"]);
  EXPECT_EQ(j1["tokens_scored"], 32);
}

// A single document of 40 MB without a newline (no paragraph break anywhere): it was read and
// tokenized whole (1.4 GB peak RSS, 17 s); now only the pieces the budget needs are.
TEST(Hardening, CalibrateReadsAHugeDocumentWithoutNewlinesInPieces) {
  FP4KIT_REQUIRE_SHARED(model, "models/stories260k-llama");
  FP4KIT_REQUIRE_SHARED(wiki, "text/wikitext2_test.txt");
  TempDir tmp;
  std::string text = read_file(wiki);
  for (char& c : text)
    if (c == '\n' || c == '\r') c = ' ';
  const fs::path big = tmp / "one-line.txt";
  {
    std::ofstream f(big, std::ios::binary);
    for (size_t written = 0; written < (40u << 20); written += text.size()) f << text;
  }
  // The prefix that holds the stream budget (4 Mi stories260K tokens, about 10 MB here), plus
  // margin: the same windows, so the same statistics.
  const fs::path head = tmp / "head.txt";
  {
    std::ifstream in(big, std::ios::binary);
    std::string prefix(16u << 20, '\0');
    in.read(prefix.data(), static_cast<std::streamsize>(prefix.size()));
    std::ofstream(head, std::ios::binary) << prefix;
  }
  const auto calibrate = [&](const fs::path& data, const std::string& out) {
    return bin() + " calibrate " + quote(model.string()) + " --data " + quote(data.string()) +
           " --samples 4 --seq-len 32 --threads 1 -o " + quote((tmp / out).string());
  };
  const auto [rc, rss_kib, cpu_s] = run_measuring_rss(calibrate(big, "big.safetensors"));
  ASSERT_EQ(rc, 0);
  std::printf("40 MB line: calibrate peak RSS %ld KiB, %.2f s CPU\n", rss_kib, cpu_s);
  EXPECT_LT(rss_kib, 150 * 1024) << "calibrate's peak RSS on a 40 MB line";
  // CPU time, not wall time: other jobs on the machine do not count.
  EXPECT_LT(cpu_s, 8.0) << "calibrate's CPU time on a 40 MB line (reading and tokenizing it whole took 17 s)";
  ASSERT_EQ(run_command(calibrate(head, "head.safetensors")).exit_code, 0);
  const ActivationStats a = read_stats_file(tmp / "big.safetensors");
  const ActivationStats b = read_stats_file(tmp / "head.safetensors");
  EXPECT_EQ(a.input_amax, b.input_amax);
  EXPECT_FALSE(a.input_amax.empty());
}

// ---- 12. a config.json nested without end -----------------------------------------------------

TEST(Hardening, DeeplyNestedConfigIsRefusedBeforeAnyWork) {
  TempDir tmp;
  const auto src = make_src(tmp);
  // 100k levels crashed (stack overflow) after the whole run, leaving OUT.partial behind.
  std::string config = read_file(src / "config.json");
  config.insert(config.rfind('}'), ", \"x\": " + std::string(100000, '[') + std::string(100000, ']'));
  std::ofstream(src / "config.json", std::ios::trunc) << config;
  for (const std::string& cmd :
       {quantize_cmd(src, tmp / "out", "--weights-only"), bin() + " verify " + quote(src.string()),
        bin() + " inspect " + quote(src.string()),
        bin() + " eval " + quote(src.string()) + " --data " + quote(make_tokens(tmp).string())}) {
    const auto r = run_command(cmd);
    EXPECT_EQ(r.exit_code, 1) << cmd << "\n" << r.output;
    EXPECT_TRUE(contains(r.output, "config.json") && contains(r.output, "nested deeper than 64"))
        << cmd << "\n" << r.output;
    EXPECT_FALSE(contains(r.output, "[1/")) << r.output;  // no tensor was processed
  }
  EXPECT_FALSE(fs::exists(tmp / "out"));
  EXPECT_FALSE(fs::exists(tmp / "out.partial"));
}

}  // namespace
}  // namespace fp4kit
