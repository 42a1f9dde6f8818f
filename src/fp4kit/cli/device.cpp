#include "fp4kit/cli/device.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <fstream>

#include "fp4kit/engine/cpu/ops.hpp"
#include "fp4kit/error.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/numeric/parallel.hpp"
#ifdef FP4KIT_HAVE_CUDA
#include "fp4kit/engine/cuda/cuda_backend.hpp"
#include "fp4kit/engine/cuda/device.hpp"
#endif

namespace fp4kit::cli {
namespace {

double gib(size_t b) { return static_cast<double>(b) / (1024.0 * 1024.0 * 1024.0); }
double mib(size_t b) { return static_cast<double>(b) / (1024.0 * 1024.0); }

// -1: not a cuda spec; otherwise the index.
int cuda_index(const std::string& a) {
  if (a == "cuda") return 0;
  if (a.rfind("cuda:", 0) != 0 || a.size() == 5) return -1;
  for (size_t i = 5; i < a.size(); ++i)
    if (a[i] < '0' || a[i] > '9') return -1;
  if (a.size() > 9) return -1;
  return std::stoi(a.substr(5));
}

}  // namespace

CLI::Validator device_validator() {
  return CLI::Validator(
      [](std::string& a) -> std::string {
        if (a == "auto" || a == "cpu" || cuda_index(a) >= 0) return {};
        return "--device must be auto, cpu, cuda or cuda:N (got '" + a + "')";
      },
      "auto|cpu|cuda[:N]");
}

Device resolve_device(const std::string& arg, bool gpu_fp32) {
  Device d;
  const std::string cpu_desc =
      fmt::format("cpu ({} threads, OpenBLAS {})", thread_count(), engine::blas_core_name());
  if (arg == "cpu") {
    d.description = cpu_desc;
    return d;
  }
#ifdef FP4KIT_HAVE_CUDA
  int index = 0;
  if (arg == "auto") {
    std::string why;
    if (engine::cuda::device_count(&why) == 0) {
      d.description = cpu_desc + ", --device auto: no CUDA device (" + why + ")";
      return d;
    }
  } else {
    index = cuda_index(arg);
  }
  const engine::cuda::DeviceInfo info = engine::cuda::device_info(index);
  d.cuda = true;
  d.index = index;
  d.description = fmt::format("cuda:{} ({}, compute {}.{}, {:.1f} of {:.1f} GiB free; products in "
                              "{}){}", index, info.name, info.cc_major, info.cc_minor,
                              gib(info.free_bytes), gib(info.total_bytes),
                              gpu_fp32 ? "float32" : "TF32 with float32 accumulation",
                              arg == "auto" ? ", chosen by --device auto" : "");
  return d;
#else
  if (arg == "auto") {
    d.description = cpu_desc + ", --device auto: this fp4kit was built without CUDA";
    return d;
  }
  throw Error("--device " + arg + ": this fp4kit was built without CUDA (nvcc was not found when "
              "it was configured); use --device cpu");
#endif
}

struct Forward::Impl {
  std::unique_ptr<engine::Engine> cpu;  // the engine, on the CPU or the CUDA backend
  bool cuda = false;
  int device = 0;
  size_t layer_stored = 0;  // the most stored bytes of one layer (what the GPU prefetch moves)
};

namespace {

size_t max_layer_stored_bytes(const Checkpoint& c, const engine::ModelSpec& S) {
  size_t most = 0;
  for (size_t li = 0; li < S.layers.size(); ++li) {
    size_t b = 0;
    for (const std::string& n : engine::layer_tensors(c, S, li)) b += c.info(n).nbytes();
    most = std::max(most, b);
  }
  return most;
}

// FP4KIT_<WHAT>_MEMORY_LIMIT=BYTES caps `avail` (to test the memory checks without a smaller
// GPU or host).
size_t limited(const char* var, size_t avail) {
  const char* lim = std::getenv(var);
  if (!lim || !*lim) return avail;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(lim, &end, 10);
  if (*end != '\0') throw Error(fmt::format("{}={}: not a byte count", var, lim));
  return std::min<size_t>(avail, v);
}

// FP4KIT_GPU_MEMORY_LIMIT=BYTES: the device is taken to have at most BYTES free.
size_t usable_free_bytes(size_t free_bytes) {
  return limited("FP4KIT_GPU_MEMORY_LIMIT", free_bytes);
}

enum class Placement { Auto, Resident, Host };

// FP4KIT_ACTIVATIONS=auto|resident|host: where the hidden states live between layers (auto: the
// memory plan decides; the numbers are the same either way).
// FP4KIT_GROUP_TOKENS=N: every layer runs over groups of at most N tokens in both placements
// (ForwardOptions::group_tokens), so a resident and a host-held run can be compared byte for
// byte; 0 or unset: the plan's choice.
size_t group_env() {
  const char* v = std::getenv("FP4KIT_GROUP_TOKENS");
  if (!v || !*v) return 0;
  char* end = nullptr;
  const unsigned long long n = std::strtoull(v, &end, 10);
  if (*end != '\0' || v[0] == '-')
    throw Error(std::string("FP4KIT_GROUP_TOKENS=") + v + ": must be a number of tokens");
  return static_cast<size_t>(n);
}

Placement placement() {
  const char* v = std::getenv("FP4KIT_ACTIVATIONS");
  const std::string a = v ? v : "";
  if (a.empty() || a == "auto") return Placement::Auto;
  if (a == "resident") return Placement::Resident;
  if (a == "host") return Placement::Host;
  throw Error("FP4KIT_ACTIVATIONS=" + a + ": must be auto, resident or host");
}

// MemAvailable of /proc/meminfo in bytes (SIZE_MAX where there is none), capped by
// FP4KIT_HOST_MEMORY_LIMIT=BYTES.
size_t host_available_bytes() {
  std::ifstream f("/proc/meminfo");
  std::string key, unit;
  size_t kib = 0, avail = 0;
  while (f >> key >> kib >> unit)
    if (key == "MemAvailable:") {
      avail = kib * 1024;
      break;
    }
  return limited("FP4KIT_HOST_MEMORY_LIMIT", avail > 0 ? avail : SIZE_MAX);
}

// Host-held: the hidden states of all tokens must fit in the host's available memory.
void check_host_memory(size_t host_bytes, size_t tokens) {
  const size_t avail = host_available_bytes();
  if (host_bytes > avail)
    throw Error(fmt::format("host-held activations: the hidden states of all {} tokens need {:.2f} "
                            "MiB of host memory, but only {:.2f} MiB is available (MemAvailable{}); "
                            "use fewer --samples",
                            tokens, mib(host_bytes), mib(avail),
                            std::getenv("FP4KIT_HOST_MEMORY_LIMIT") ? ", FP4KIT_HOST_MEMORY_LIMIT" : ""));
}

}  // namespace

// The memory plan of one run: resident or host-held, and the line that says which and why.
struct Forward::Plan {
  bool host = false;
  // > 0: ForwardOptions::group_tokens for the run (resident on a GPU: one group of all tokens, so
  // the MoE block routes all of them at once and each expert's products run over all its tokens,
  // not 128 small products per group of 16384 tokens; host-held: Engine::group_tokens).
  size_t group = 0;
  std::string line;
};

Forward::Plan Forward::plan(size_t tokens, size_t chunk, size_t longest) const {
  const engine::Engine& e = *impl_->cpu;
  const Placement want = placement();
  const size_t forced = group_env();
  const size_t group = std::min(
      tokens, std::max(forced > 0 ? forced : e.group_tokens(chunk), std::max(chunk, longest)));
  const size_t host_bytes = tokens * static_cast<size_t>(e.spec().hidden) * sizeof(float);
  const size_t resident_group = forced > 0 ? forced : impl_->cuda ? tokens : 0;
  auto resident_line = [&](const char* mem, const char* why) {
    return fmt::format("{}: resident{} (hidden states of all {} tokens kept in {} between "
                       "layers): activations about {:.1f} MiB, weights up to {:.1f} MiB {} at a "
                       "time (one layer's attention / one expert",
                       mem, why, tokens, impl_->cuda ? "GPU memory" : "memory",
                       mib(e.activation_bytes(tokens, chunk, longest, false, resident_group)),
                       mib(e.peak_weight_bytes()), impl_->cuda ? "uploaded" : "decoded");
  };
  auto host_line = [&](const char* mem, const std::string& why) {
    return fmt::format("{}: host-held ({}): the hidden states of all {} tokens ({:.1f} MiB) stay "
                       "in host memory, each layer runs over groups of at most {} tokens, one "
                       "group at a time in {}: activations about {:.1f} MiB, weights up to {:.1f} "
                       "MiB {} at a time (a layer's blocks at once",
                       mem, why, tokens, mib(host_bytes), group,
                       impl_->cuda ? "GPU memory" : "backend memory",
                       mib(e.activation_bytes(tokens, chunk, longest, true, forced)),
                       mib(e.peak_weight_bytes(true)), impl_->cuda ? "uploaded" : "decoded");
  };
  Plan p;
  if (!impl_->cuda) {
    p.host = want == Placement::Host;
    p.group = forced;
    if (p.host) check_host_memory(host_bytes, tokens);
    p.line = p.host ? host_line("memory", "FP4KIT_ACTIVATIONS=host") + ")"
                    : resident_line("memory", "") + ")";
    return p;
  }
#ifdef FP4KIT_HAVE_CUDA
  // Stated up front, checked against what the device has free: the activations plus two
  // uploads' worth of weights (one in use, the next arriving) and a reserve.
  const size_t reserve = size_t(512) << 20;
  const size_t need_res =
      e.activation_bytes(tokens, chunk, longest, false, resident_group) + 2 * e.peak_weight_bytes();
  const size_t need_host =
      e.activation_bytes(tokens, chunk, longest, true, forced) + 2 * e.peak_weight_bytes(true);
  const engine::cuda::DeviceInfo info = engine::cuda::device_info(impl_->device);
  const size_t free_b = usable_free_bytes(info.free_bytes);
  const std::string capped = free_b < info.free_bytes ? " (FP4KIT_GPU_MEMORY_LIMIT)" : "";
  const std::string tail = fmt::format("; twice that reserved), plus up to {:.1f} MiB of stored "
                                       "weights of two layers prefetched while free memory "
                                       "allows; {:.2f} GiB free{}",
                                       mib(2 * impl_->layer_stored), gib(free_b), capped);
  const bool res_fits = need_res + reserve <= free_b, host_fits = need_host + reserve <= free_b;
  if (want == Placement::Resident || (want == Placement::Auto && res_fits)) {
    if (!res_fits)
      throw Error(fmt::format("GPU cuda:{} ({}): FP4KIT_ACTIVATIONS=resident: the run needs about "
                              "{:.2f} GiB (activations of {} tokens and two uploads of weights) "
                              "plus 0.5 GiB reserve, but only {:.2f} GiB is free{}",
                              impl_->device, info.name, gib(need_res), tokens, gib(free_b),
                              capped));
    p.group = resident_group;
    p.line = resident_line("GPU memory plan", want == Placement::Resident
                                                  ? ", FP4KIT_ACTIVATIONS=resident" : "") +
             tail;
    return p;
  }
  if (!host_fits)
    throw Error(fmt::format(
        "GPU cuda:{} ({}): the run needs about {:.2f} GiB with the hidden states of all {} tokens "
        "on the GPU, and {:.2f} GiB with them in host memory (groups of {} tokens on the GPU, a "
        "layer's blocks of weights at once, twice), plus 0.5 GiB reserve, but only {:.2f} GiB is "
        "free{}; use a smaller --chunk, fewer --samples or another device",
        impl_->device, info.name, gib(need_res), tokens, gib(need_host), group, gib(free_b),
        capped));
  check_host_memory(host_bytes, tokens);
  p.host = true;
  p.group = forced;
  p.line = host_line("GPU memory plan",
                     want == Placement::Host
                         ? std::string("FP4KIT_ACTIVATIONS=host")
                         : fmt::format("resident would need {:.2f} GiB + 0.5 GiB reserve, "
                                       "{:.2f} GiB free{}",
                                       gib(need_res), gib(free_b), capped)) +
           tail;
#endif
  return p;
}

Forward::Forward(const Device& d, const Checkpoint& ckpt, bool gpu_fp32)
    : impl_(std::make_unique<Impl>()) {
#ifdef FP4KIT_HAVE_CUDA
  if (d.cuda) {
    impl_->cuda = true;
    impl_->device = d.index;
    engine::cuda::BackendOptions bo;
    bo.device = d.index;
    bo.tf32 = !gpu_fp32;
    impl_->cpu = std::make_unique<engine::Engine>(
        ckpt, std::shared_ptr<engine::Backend>(engine::cuda::make_cuda_backend(bo)));
    impl_->layer_stored = max_layer_stored_bytes(ckpt, impl_->cpu->spec());
    return;
  }
#endif
  impl_->cpu = std::make_unique<engine::Engine>(ckpt);
}

Forward::~Forward() = default;

const engine::ModelSpec& Forward::spec() const {
  return impl_->cpu->spec();
}

std::string Forward::memory_line(size_t tokens, size_t chunk, size_t longest) const {
  return plan(tokens, chunk, longest).line;
}

void Forward::run(const std::vector<std::vector<int32_t>>& seqs, const engine::ForwardOptions& opt,
                  engine::StatsCollector* stats, const engine::LogitsSink& sink) {
  size_t tokens = 0, longest = 0;
  for (const auto& q : seqs) tokens += q.size(), longest = std::max(longest, q.size());
  engine::ForwardOptions o = opt;
  const Plan p = plan(tokens, opt.chunk_tokens, longest);
  o.host_activations = p.host;
  if (o.group_tokens == 0) o.group_tokens = p.group;
  impl_->cpu->run(seqs, o, stats, sink);
}

std::function<engine::EvalOptions::Runner(const Checkpoint&)> eval_runner(const Device& d,
                                                                          bool gpu_fp32) {
  if (!d.cuda && placement() != Placement::Host) return {};
  return [d, gpu_fp32](const Checkpoint& c) -> engine::EvalOptions::Runner {
    auto f = std::make_shared<Forward>(d, c, gpu_fp32);
    auto stated = std::make_shared<bool>(false);
    return [f, stated](const std::vector<std::vector<int32_t>>& s,
                       const engine::ForwardOptions& o, const engine::LogitsSink& sink) {
      if (!*stated) {  // the plan of the first forward (the others are no larger)
        size_t tokens = 0, longest = 0;
        for (const auto& q : s) tokens += q.size(), longest = std::max(longest, q.size());
        fmt::print(stderr, "fp4kit: eval: {}\n", f->memory_line(tokens, o.chunk_tokens, longest));
        *stated = true;
      }
      f->run(s, o, nullptr, sink);
    };
  };
}

}  // namespace fp4kit::cli
