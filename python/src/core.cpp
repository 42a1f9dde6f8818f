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

#include <memory>
#include <optional>

#include "fp4kit/cli/jobs.hpp"
#include "fp4kit/cli/quantize_job.hpp"
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
auto with_gil(std::optional<nb::callable> cb) {
  return [cb = std::move(cb)](A... args) {
    nb::gil_scoped_acquire locked;
    (*cb)(args...);
  };
}

std::string quantize(const std::string& src, const std::string& out, const std::string& format,
                     bool weights_only, const std::string& stats, const std::string& recipe,
                     const std::vector<std::pair<bool, std::string>>& rules, bool dry_run,
                     const std::string& plan_json, int threads, const std::string& report,
                     const std::string& scale_form, const std::string& max_shard_size, bool force,
                     const std::string& verify, bool input_scale_fallback,
                     bool quantize_linear_attn, std::optional<nb::callable> progress,
                     std::vector<std::string>* warnings) {
  cli::QuantizeArgs a;
  a.source = src;
  a.out = out;
  a.format = format;
  a.weights_only = weights_only;
  a.stats = stats;
  a.recipe = recipe;
  for (const auto& [include, glob] : rules)
    a.rules.push_back({include ? Rule::Kind::Include : Rule::Kind::Exclude, glob,
                       (include ? "--include " : "--exclude ") + glob});
  a.dry_run = dry_run;
  a.plan_json = plan_json;
  a.threads = threads;
  a.report = report;
  a.scale_form = scale_form;
  a.max_shard_size = max_shard_size;
  a.force = force;
  a.verify = verify;
  a.input_scale_fallback = input_scale_fallback;
  a.quantize_linear_attn = quantize_linear_attn;
  a.quiet = true;
  if (progress)
    a.on_progress = with_gil<size_t, size_t, const std::string&, uint64_t>(std::move(progress));
  cli::QuantizeOutcome outcome;
  {
    nb::gil_scoped_release unlocked;
    cli::run_quantize_job(a, &outcome);
  }
  *warnings = outcome.warnings;
  return outcome.report.dump();
}

}  // namespace
}  // namespace fp4kit::python

NB_MODULE(_core, m) {
  using namespace fp4kit;
  using namespace fp4kit::python;
  m.doc() = "fp4kit's C++ core (use the fp4kit package, not this module)";
  m.attr("__version__") = FP4KIT_VERSION;
  nb::exception<fp4kit::Error>(m, "Error", PyExc_RuntimeError);

  m.def(
      "quantize",
      [](const std::string& src, const std::string& out, const std::string& format,
         bool weights_only, const std::string& stats, const std::string& recipe,
         const std::vector<std::pair<bool, std::string>>& rules, bool dry_run,
         const std::string& plan_json, int threads, const std::string& report,
         const std::string& scale_form, const std::string& max_shard_size, bool force,
         const std::string& verify, bool input_scale_fallback, bool quantize_linear_attn,
         std::optional<nb::callable> progress) {
        std::vector<std::string> warnings;
        std::string r = quantize(src, out, format, weights_only, stats, recipe, rules, dry_run,
                                 plan_json, threads, report, scale_form, max_shard_size, force,
                                 verify, input_scale_fallback, quantize_linear_attn,
                                 std::move(progress), &warnings);
        return std::make_pair(r, warnings);
      },
      "src"_a, "out"_a, "format"_a, "weights_only"_a, "stats"_a, "recipe"_a, "rules"_a,
      "dry_run"_a, "plan_json"_a, "threads"_a, "report"_a, "scale_form"_a, "max_shard_size"_a,
      "force"_a, "verify"_a, "input_scale_fallback"_a, "quantize_linear_attn"_a,
      "progress"_a.none(),
      "The quantize job of `fp4kit quantize`; returns (report JSON, plan warnings). Rules are "
      "(include?, glob) in order, later wins.");

  m.def(
      "verify",
      [](const std::string& dir, const std::string& source, const std::string& report,
         int threads, double max_rel_rmse) {
        cli::VerifyArgs a{dir, source, report, threads, max_rel_rmse};
        nb::gil_scoped_release unlocked;
        return cli::run_verify_job(a).to_json().dump();
      },
      "dir"_a, "source"_a, "report"_a, "threads"_a, "max_rel_rmse"_a,
      "The job of `fp4kit verify`; returns the report JSON (--report).");

  m.def(
      "inspect",
      [](const std::string& dir) {
        nb::gil_scoped_release unlocked;
        return cli::inspect_report(dir).dump();
      },
      "dir"_a, "What `fp4kit inspect --json` prints.");

  m.def(
      "calibrate",
      [](const std::string& src, const std::string& data, const std::string& out,
         int64_t samples, int64_t seq_len, const std::string& text_field, bool all_experts,
         int threads, const std::string& device, size_t chunk,
         std::optional<nb::callable> progress) {
        cli::CalibrateArgs a;
        a.src = src;
        a.data = data;
        a.out = out;
        a.samples = samples;
        a.seq_len = seq_len;
        a.text_field = text_field;
        a.all_experts = all_experts;
        a.threads = threads;
        a.device = device;
        a.chunk = chunk;
        a.quiet = true;
        if (progress) a.on_layer = with_gil<int64_t, int64_t>(std::move(progress));
        cli::CalibrateOutcome r;
        {
          nb::gil_scoped_release unlocked;
          r = cli::run_calibrate_job(a);
        }
        return nb::make_tuple(r.samples, r.seq_len, r.tokens, r.linears, r.idle_experts,
                              r.seconds, r.forward_seconds);
      },
      "src"_a, "data"_a, "out"_a, "samples"_a, "seq_len"_a, "text_field"_a, "all_experts"_a,
      "threads"_a, "device"_a, "chunk"_a, "progress"_a.none(),
      "The job of `fp4kit calibrate`; returns (samples, seq_len, tokens, linears, idle experts, "
      "seconds, forward seconds).");

  m.def(
      "eval",
      [](const std::string& quant, const std::string& base, const std::string& data,
         const std::string& base_logits, const std::string& save_base,
         const std::string& dump_logits, const std::string& text_field, size_t ctx,
         size_t chunks, size_t tokens, bool no_act_quant, int threads) {
        cli::EvalArgs a;
        a.quant = quant;
        a.base = base;
        a.data = data;
        a.base_logits = base_logits;
        a.save_base = save_base;
        a.dump_logits = dump_logits;
        a.text_field = text_field;
        a.ctx = ctx;
        a.chunks = chunks;
        a.tokens = tokens;
        a.no_act_quant = no_act_quant;
        a.threads = threads;
        nb::gil_scoped_release unlocked;
        return cli::run_eval_job(a).dump();
      },
      "quant"_a, "base"_a, "data"_a, "base_logits"_a, "save_base"_a, "dump_logits"_a,
      "text_field"_a, "ctx"_a, "chunks"_a, "tokens"_a, "no_act_quant"_a, "threads"_a,
      "What `fp4kit eval --json` prints.");

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
