// fp4kit._core: the Python binding of fp4kit's jobs (cli/quantize_job.hpp, cli/jobs.hpp, the same
// functions the command line runs) and of checkpoint reading and NVFP4 decoding. Results cross as
// JSON text (the documents --report / --json write); python/fp4kit/__init__.py turns them into
// objects. fp4kit::Error becomes fp4kit.Error with the message the command line prints.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/function.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <fmt/core.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <vector>

#include "fp4kit/cli/jobs.hpp"
#include "fp4kit/cli/quantize_job.hpp"
#include "fp4kit/engine/cpu/ops.hpp"
#include "fp4kit/engine/weights.hpp"
#include "fp4kit/error.hpp"
#include "fp4kit/io/checkpoint.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace fp4kit::python {
namespace {

// The element type numpy sees for a safetensors dtype. BF16 and the FP8 types have no numpy dtype:
// their raw bits come as uint16 / uint8 (the Python layer says so).
nb::dlpack::dtype numpy_dtype(DType t) {
  switch (t) {
    case DType::BOOL: return nb::dtype<bool>();
    case DType::U8: case DType::F8_E4M3: case DType::F8_E5M2: case DType::F8_E8M0:
      return nb::dtype<uint8_t>();
    case DType::I8: return nb::dtype<int8_t>();
    case DType::I16: return nb::dtype<int16_t>();
    case DType::I32: return nb::dtype<int32_t>();
    case DType::I64: return nb::dtype<int64_t>();
    case DType::F16: return {static_cast<uint8_t>(nb::dlpack::dtype_code::Float), 16, 1};
    case DType::BF16: return nb::dtype<uint16_t>();
    case DType::F32: return nb::dtype<float>();
    case DType::F64: return nb::dtype<double>();
  }
  throw Error("internal: unknown dtype");
}

using Array = nb::ndarray<nb::numpy, nb::ro>;
using FloatArray = nb::ndarray<nb::numpy, float>;

// A checkpoint opened for reading; arrays returned by tensor() view its memory map (read-only)
// and keep it open.
struct PyCheckpoint {
  std::unique_ptr<Checkpoint> ckpt;

  nb::object tensor(const std::string& name) const {
    const TensorInfo& t = ckpt->info(name);
    const auto bytes = ckpt->bytes(name);
    std::vector<size_t> shape(t.shape.begin(), t.shape.end());
    nb::object owner = nb::find(this);  // the array keeps this checkpoint (its memory map) alive
    return nb::cast(Array(bytes.data(), shape.size(), shape.data(), owner, nullptr,
                          numpy_dtype(t.dtype)));
  }

  // The float32 matrix a loader computes from an NVFP4 linear (format A: weight U8 +
  // weight_scale + weight_scale_2; format B: weight_packed + weight_scale + weight_global_scale),
  // or from a BF16/F16/F32 one: engine::load_linear, what `fp4kit eval` runs on.
  nb::object dequantize(const std::string& module) const {
    const std::string packed =
        ckpt->has(module + ".weight_packed") ? module + ".weight_packed" : module + ".weight";
    const TensorInfo& t = ckpt->info(packed);
    if (t.shape.size() != 2)
      throw Error(fmt::format("{}: {} is not a 2-D linear weight", ckpt->dir().string(), packed));
    const bool nvfp4 = t.dtype == DType::U8;
    engine::LinearRef ref;
    ref.module = module;
    ref.rows = t.shape[0];
    ref.cols = nvfp4 ? t.shape[1] * 2 : t.shape[1];
    engine::LinearWeights w;
    {
      nb::gil_scoped_release unlocked;
      w = engine::load_linear(*ckpt, ref, /*activations=*/false);
    }
    auto* data = new std::vector<float>(std::move(w.w));
    nb::capsule free(data, [](void* p) noexcept { delete static_cast<std::vector<float>*>(p); });
    const size_t shape[2] = {ref.rows, ref.cols};
    return nb::cast(FloatArray(data->data(), 2, shape, free));
  }
};

// Progress of the Python caller; the job runs without the GIL and takes it for each call.
template <typename... A>
auto with_gil(nb::callable cb) {
  return [cb = std::move(cb)](A... args) {
    nb::gil_scoped_acquire locked;
    cb(args...);
  };
}

// A job's options from Python keywords named as the C++ fields (and the command's long options,
// '-' as '_'). A keyword no field takes is an error, never ignored.
class Options {
 public:
  explicit Options(nb::kwargs kw) : kw_(std::move(kw)) {}
  template <typename T>
  Options& operator()(const char* name, T& field) {
    if (kw_.contains(name)) {
      field = nb::cast<T>(kw_[name]);
      used_.push_back(name);
    }
    return *this;
  }
  // The callable under `name`, or none (absent or None).
  std::optional<nb::callable> callable(const char* name) {
    if (!kw_.contains(name)) return std::nullopt;
    used_.push_back(name);
    if (kw_[name].is_none()) return std::nullopt;
    return nb::cast<nb::callable>(kw_[name]);
  }
  void check_all_used(const char* job) const {
    for (auto [key, value] : kw_) {
      const std::string k = nb::cast<std::string>(key);
      if (std::find(used_.begin(), used_.end(), k) == used_.end())
        throw nb::type_error(fmt::format("{}() got an unexpected keyword argument '{}'", job, k).c_str());
    }
  }

 private:
  nb::kwargs kw_;
  std::vector<std::string> used_;
};

nb::tuple quantize_job(nb::kwargs kw) {
  cli::QuantizeArgs a;
  std::vector<std::pair<bool, std::string>> rules;  // (include?, glob) in order; later wins
  Options o(std::move(kw));
  o("src", a.source)("out", a.out)("format", a.format)("weights_only", a.weights_only)(
      "stats", a.stats)("recipe", a.recipe)("rules", rules)("dry_run", a.dry_run)(
      "plan_json", a.plan_json)("threads", a.threads)("report", a.report)(
      "scale_form", a.scale_form)("max_shard_size", a.max_shard_size)("force", a.force)(
      "verify", a.verify)("input_scale_fallback", a.input_scale_fallback)(
      "quantize_linear_attn", a.quantize_linear_attn)("scales", a.scales)(
      "global_norm", a.global_norm)("hessian_min_tokens", a.hessian_min_tokens)("gptq", a.gptq)(
      "gptq_damp", a.gptq_damp)("allow_destroyed", a.allow_destroyed);
  if (auto cb = o.callable("progress"))
    a.on_progress = with_gil<size_t, size_t, const std::string&, uint64_t>(std::move(*cb));
  o.check_all_used("quantize");
  for (const auto& [include, glob] : rules)
    a.rules.push_back({include ? Rule::Kind::Include : Rule::Kind::Exclude, glob,
                       (include ? "--include " : "--exclude ") + glob});
  a.quiet = true;
  cli::QuantizeOutcome outcome;
  {
    nb::gil_scoped_release unlocked;
    cli::run_quantize_job(a, &outcome);
  }
  return nb::make_tuple(outcome.report.dump(), outcome.warnings);
}

std::string verify_job(nb::kwargs kw) {
  cli::VerifyArgs a;
  Options o(std::move(kw));
  o("dir", a.dir)("source", a.source)("report", a.report)("threads", a.threads)(
      "max_rel_rmse", a.max_rel_rmse);
  o.check_all_used("verify");
  nb::gil_scoped_release unlocked;
  return cli::run_verify_job(a).to_json().dump();
}

std::string calibrate_job(nb::kwargs kw) {
  cli::CalibrateArgs a;
  Options o(std::move(kw));
  o("src", a.src)("data", a.data)("out", a.out)("samples", a.samples)("seq_len", a.seq_len)(
      "text_field", a.text_field)("all_experts", a.all_experts)("threads", a.threads)(
      "device", a.device)("gpu_fp32", a.gpu_fp32)("hessian", a.hessian)("full_xtx", a.full_xtx)(
      "chunk_tokens", a.chunk);
  if (auto cb = o.callable("progress")) a.on_layer = with_gil<int64_t, int64_t>(std::move(*cb));
  o.check_all_used("calibrate");
  a.quiet = true;
  cli::CalibrateOutcome r;
  {
    nb::gil_scoped_release unlocked;
    r = cli::run_calibrate_job(a);
  }
  nlohmann::json j = {{"samples", r.samples},         {"seq_len", r.seq_len},
                      {"tokens", r.tokens},           {"linears", r.linears},
                      {"idle_experts", r.idle_experts}, {"seconds", r.seconds},
                      {"forward_seconds", r.forward_seconds}, {"device", r.device}};
  return j.dump();
}

std::string eval_job(nb::kwargs kw) {
  cli::EvalArgs a;
  Options o(std::move(kw));
  o("quant", a.quant)("base", a.base)("data", a.data)("base_logits", a.base_logits)(
      "save_base", a.save_base)("dump_logits", a.dump_logits)("text_field", a.text_field)(
      "ctx", a.ctx)("chunks", a.chunks)("tokens", a.tokens)("no_act_quant", a.no_act_quant)(
      "threads", a.threads)("device", a.device)("gpu_fp32", a.gpu_fp32);
  o.check_all_used("eval");
  nb::gil_scoped_release unlocked;
  return cli::run_eval_job(a).dump();
}

}  // namespace
}  // namespace fp4kit::python

NB_MODULE(_core, m) {
  using namespace fp4kit;
  using namespace fp4kit::python;
  m.doc() = "fp4kit's C++ core (use the fp4kit package, not this module)";
  m.attr("__version__") = FP4KIT_VERSION;
  // Bad input (the command exits 1), and wrong usage found after parsing (it exits 2).
  nb::exception<fp4kit::Error> error(m, "Error", PyExc_RuntimeError);
  nb::exception<fp4kit::UsageError>(m, "UsageError", error);

  // The jobs take keywords named as their C++ option fields (python/fp4kit/__init__.py has the
  // documented signatures) and return the JSON documents the command writes.
  m.def("quantize", &quantize_job,
        "The job of `fp4kit quantize`: returns (the --report JSON, the plan's warnings). `rules` "
        "is a list of (include?, glob) in order, later wins.");
  m.def("verify", &verify_job, "The job of `fp4kit verify`: returns the --report JSON.");
  m.def(
      "inspect",
      [](const std::string& dir) {
        nb::gil_scoped_release unlocked;
        return cli::inspect_report(dir).dump();
      },
      "dir"_a, "What `fp4kit inspect --json` prints.");
  m.def("calibrate", &calibrate_job,
        "The job of `fp4kit calibrate` (writes `out`): returns its counts as JSON.");
  m.def("eval", &eval_job, "What `fp4kit eval --json` prints.");
  // OpenBLAS's kernels (engine/cpu/ops.hpp): the package's __init__ runs the same rule as the
  // executable before this module loads (python/fp4kit/_blas.py).
  m.def("_blas_coretype_override", &engine::blas_coretype_override,
        "The OPENBLAS_CORETYPE the fp4kit executable would run itself again with ('' for none).");
  m.def("_blas_core_name", &engine::blas_core_name, "The OpenBLAS kernels in use.");

  nb::class_<PyCheckpoint>(m, "Checkpoint")
      .def(
          "__init__",
          [](PyCheckpoint* self, const std::string& path) {
            new (self) PyCheckpoint{Checkpoint::open(path)};
          },
          "path"_a, "Opens a checkpoint directory (or one .safetensors file).")
      .def_prop_ro("path", [](const PyCheckpoint& c) { return c.ckpt->dir().string(); })
      .def_prop_ro("tensor_names", [](const PyCheckpoint& c) { return c.ckpt->tensor_names(); })
      .def(
          "info",
          [](const PyCheckpoint& c, const std::string& name) {
            const TensorInfo& t = c.ckpt->info(name);
            return std::make_pair(std::string(dtype_name(t.dtype)), t.shape);
          },
          "name"_a, "(safetensors dtype, shape) of a tensor.")
      .def("tensor", &PyCheckpoint::tensor, "name"_a,
           "The tensor's stored bytes as a read-only numpy array (BF16 as uint16 bits, FP8 as "
           "uint8 codes).")
      .def("dequantize", &PyCheckpoint::dequantize, "module"_a,
           "The float32 [N, K] weight of a linear module, decoded as loaders decode it.");
}
